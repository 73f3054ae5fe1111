package io.kvmix.models.generation;

import io.kvmix.core.cache.KvBytes;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.llama.LlamaModel;
import io.kvmix.models.llama.LlamaState;

import java.util.Arrays;
import java.util.function.IntConsumer;

/** Autoregressive generation with a model and a KV-cache plan (null for an fp16 cache). */
public final class Generator {
    private Generator() {
    }

    /**
     * What a generation produced.
     *
     * @param newTokens      ids of the generated tokens (EOS included when it ended the generation)
     * @param stoppedAtEos   whether an end-of-sequence token ended it
     * @param prefillSeconds time of the prompt's forward pass
     * @param decodeSeconds  time of all single-token steps
     * @param kvBytes        live cache bytes at the end
     */
    public record Generation(int[] newTokens, boolean stoppedAtEos, double prefillSeconds, double decodeSeconds,
                             KvBytes kvBytes) {
        /** Decode steps per second (new tokens after the first, which the prefill produced). */
        public double decodeTokensPerSecond() {
            return newTokens.length > 1 ? (newTokens.length - 1) / decodeSeconds : 0;
        }
    }

    /**
     * Generates from {@code prompt} (token ids used verbatim).
     *
     * @param onToken called with each new token as soon as it is chosen (streaming); may be null
     */
    public static Generation generate(LlamaModel model, QuantPlan plan, int[] prompt, SamplingOptions options,
                                      IntConsumer onToken) {
        if (prompt.length == 0) {
            throw new IllegalArgumentException("empty prompt: generation needs at least one token");
        }
        int vocab = model.config().vocabSize();
        TokenSampler sampler = new TokenSampler(options);
        int[] generated = new int[options.maxNewTokens()];
        int count = 0;
        boolean eos = false;
        try (LlamaState state = model.newState(plan)) {
            long start = System.nanoTime();
            float[] logits = model.forward(state, prompt, false);
            double prefill = (System.nanoTime() - start) / 1e9;
            start = System.nanoTime();
            while (count < options.maxNewTokens()) {
                if (count < options.minNewTokens()) {
                    for (int id : model.eosTokenIds()) {
                        if (id >= 0 && id < vocab) {
                            logits[id] = Float.NEGATIVE_INFINITY;
                        }
                    }
                }
                int token = sampler.next(logits, 0, vocab);
                generated[count++] = token;
                if (onToken != null) {
                    onToken.accept(token);
                }
                if (options.stopAtEos() && model.eosTokenIds().contains(token)) {
                    eos = true;
                    break;
                }
                if (count < options.maxNewTokens()) {
                    logits = model.forward(state, new int[]{token}, false);
                }
            }
            double decode = (System.nanoTime() - start) / 1e9;
            return new Generation(Arrays.copyOf(generated, count), eos, prefill, decode, state.cache().bytes());
        }
    }
}
