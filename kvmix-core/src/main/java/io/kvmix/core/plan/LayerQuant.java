package io.kvmix.core.plan;

import java.util.Objects;

/**
 * One layer's quantization: keys and values may differ in width and policy.
 *
 * @param sinks the first {@code sinks} tokens of the sequence stay full precision forever
 */
public record LayerQuant(StreamQuant keys, StreamQuant values, int sinks) {
    public LayerQuant {
        Objects.requireNonNull(keys, "keys");
        Objects.requireNonNull(values, "values");
        if (sinks < 0) {
            throw new IllegalArgumentException("sinks=" + sinks + ", must be >= 0");
        }
    }

    /** K{@code kBits}/V{@code vBits} with the reference's ratios and no sinks. */
    public static LayerQuant reference(int kBits, int vBits) {
        return new LayerQuant(StreamQuant.reference(kBits), StreamQuant.reference(vBits), 0);
    }

    /** The same widths with {@code policy} for both keys and values. */
    public LayerQuant withPolicy(ResidualPolicy policy) {
        return new LayerQuant(keys.withPolicy(policy), values.withPolicy(policy), sinks);
    }

    /** The same streams with {@code newSinks} attention-sink tokens. */
    public LayerQuant withSinks(int newSinks) {
        return new LayerQuant(keys, values, newSinks);
    }
}
