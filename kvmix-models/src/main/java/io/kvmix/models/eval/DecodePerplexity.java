package io.kvmix.models.eval;

import io.kvmix.core.cache.KvBytes;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.llama.LlamaModel;
import io.kvmix.models.llama.LlamaState;

import java.util.List;
import java.util.function.IntConsumer;

/**
 * Decode perplexity (DESIGN.md "Accuracy protocol"): per window of T tokens, prefill the first P, then
 * feed the rest one token at a time through the cache (teacher forcing), summing the negative
 * log-likelihood of the T - P predicted tokens. Prefill-only perplexity could not see a quantized cache,
 * since a prefill attends in full precision.
 */
public final class DecodePerplexity {
    private DecodePerplexity() {
    }

    /**
     * @param nllSum      total negative log-likelihood (nats)
     * @param predictions number of predicted tokens
     * @param windows     windows evaluated
     * @param kvBytes     live cache bytes at the end of the last window
     */
    public record Result(double nllSum, long predictions, int windows, KvBytes kvBytes) {
        public double perplexity() {
            return Math.exp(nllSum / predictions);
        }
    }

    /**
     * @param windows  token ids, each window evaluated in a fresh cache
     * @param prefill  tokens prefilled per window (P)
     * @param progress called with the window index after each window; may be null
     */
    public static Result evaluate(LlamaModel model, QuantPlan plan, List<int[]> windows, int prefill,
                                  IntConsumer progress) {
        if (windows.isEmpty()) {
            throw new IllegalArgumentException("no windows to evaluate");
        }
        int vocab = model.config().vocabSize();
        double nll = 0;
        long count = 0;
        KvBytes bytes = KvBytes.ZERO;
        for (int w = 0; w < windows.size(); w++) {
            int[] window = windows.get(w);
            if (prefill < 1 || window.length <= prefill) {
                throw new IllegalArgumentException("window " + w + " has " + window.length
                        + " tokens; it needs more than the prefill of " + prefill);
            }
            for (int id : window) {
                if (id < 0 || id >= vocab) {
                    throw new IllegalArgumentException("window " + w + ": token id " + id + " is outside the vocabulary (0.."
                            + (vocab - 1) + ")");
                }
            }
            try (LlamaState state = model.newState(plan)) {
                float[] logits = model.forward(state, java.util.Arrays.copyOf(window, prefill), false);
                for (int t = prefill; t < window.length; t++) {
                    nll += negativeLogLikelihood(logits, 0, vocab, window[t]);
                    count++;
                    if (t + 1 < window.length) {
                        logits = model.forward(state, new int[]{window[t]}, false);
                    }
                }
                bytes = state.cache().bytes();
            }
            if (progress != null) {
                progress.accept(w);
            }
        }
        return new Result(nll, count, windows.size(), bytes);
    }

    /** {@code -log softmax(logits)[target]}, in double. */
    public static double negativeLogLikelihood(float[] logits, int offset, int vocab, int target) {
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < vocab; i++) {
            max = Math.max(max, logits[offset + i]);
        }
        double sum = 0;
        for (int i = 0; i < vocab; i++) {
            sum += Math.exp(logits[offset + i] - max);
        }
        return Math.log(sum) + max - logits[offset + target];
    }
}
