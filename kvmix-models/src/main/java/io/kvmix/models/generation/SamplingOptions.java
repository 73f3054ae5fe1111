package io.kvmix.models.generation;

/**
 * How the next token is chosen and when generation stops.
 *
 * @param maxNewTokens stop after this many new tokens
 * @param minNewTokens end-of-sequence is impossible until this many new tokens exist (transformers' min_new_tokens)
 * @param greedy       argmax; otherwise sample with {@code temperature} and nucleus {@code topP}
 * @param temperature  softmax temperature for sampling (> 0)
 * @param topP         nucleus mass in (0, 1]
 * @param seed         seed of the sampler, so a sampled generation is reproducible
 * @param stopAtEos    stop when an end-of-sequence token is produced
 */
public record SamplingOptions(int maxNewTokens, int minNewTokens, boolean greedy, double temperature, double topP,
                              long seed, boolean stopAtEos) {
    public SamplingOptions {
        if (maxNewTokens < 0 || minNewTokens < 0 || minNewTokens > maxNewTokens) {
            throw new IllegalArgumentException("max-new=" + maxNewTokens + ", min-new=" + minNewTokens
                    + ": need 0 <= min-new <= max-new");
        }
        if (!greedy && !(temperature > 0)) {
            throw new IllegalArgumentException("temperature=" + temperature + ", must be > 0");
        }
        if (!(topP > 0 && topP <= 1)) {
            throw new IllegalArgumentException("top-p=" + topP + ", must be in (0, 1]");
        }
    }

    public static SamplingOptions greedy(int maxNewTokens) {
        return new SamplingOptions(maxNewTokens, 0, true, 1, 1, 0, true);
    }
}
