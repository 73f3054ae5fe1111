package io.kvmix.profiler;

import io.kvmix.profiler.allocation.LayerImportance;

import java.util.List;

/**
 * Everything one {@link ImportanceProfiler#profile} call measured.
 *
 * @param prompts         per-prompt losses and gradient norms, in input order
 * @param keyImportance   per layer, the mean over prompts of the key gradient norms
 * @param valueImportance per layer, the mean over prompts of the value gradient norms
 * @param forwardPasses   model forward passes run (one per prompt)
 * @param backwardPasses  backward passes run (one per prompt: every layer's gradients come from it)
 */
public record ProfileResult(List<PromptGradients> prompts, double[] keyImportance, double[] valueImportance,
                            int forwardPasses, int backwardPasses) {
    public ProfileResult {
        prompts = List.copyOf(prompts);
        keyImportance = keyImportance.clone();
        valueImportance = valueImportance.clone();
    }

    @Override
    public double[] keyImportance() {
        return keyImportance.clone();
    }

    @Override
    public double[] valueImportance() {
        return valueImportance.clone();
    }

    /** The per-layer importance scores, as the allocation rules and the chart take them. */
    public LayerImportance importance() {
        return new LayerImportance(keyImportance, valueImportance);
    }

    /** Mean loss over the prompts (nats per token, prompts weighted equally). */
    public double meanLoss() {
        return prompts.stream().mapToDouble(PromptGradients::loss).average().orElseThrow();
    }
}
