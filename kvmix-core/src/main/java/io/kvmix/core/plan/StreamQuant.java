package io.kvmix.core.plan;

import io.kvmix.core.quant.BitWidth;

import java.util.Objects;

/** How one stream (the keys or the values) of one layer is stored: code width and residual policy. */
public record StreamQuant(BitWidth bits, ResidualPolicy policy) {
    public StreamQuant {
        Objects.requireNonNull(bits, "bits");
        Objects.requireNonNull(policy, "policy");
    }

    /** {@code bits}-bit codes with the reference's residual ratio for that width. */
    public static StreamQuant reference(int bits) {
        return new StreamQuant(BitWidth.of(bits), ResidualPolicy.Ratio.referenceFor(bits));
    }

    /** The same width with another residual policy. */
    public StreamQuant withPolicy(ResidualPolicy newPolicy) {
        return new StreamQuant(bits, newPolicy);
    }
}
