package io.kvmix.profiler;

/**
 * One calibration prompt's result: the mean next-token cross-entropy and, per layer, the L2
 * (Frobenius) norm of its gradient on {@code k_proj.weight} and {@code v_proj.weight}.
 *
 * @param index      the prompt's position in the input, 0-based
 * @param tokens     tokens used (after truncation to the length limit)
 * @param loss       mean cross-entropy over the {@code tokens - 1} next-token predictions (nats)
 * @param keyNorms   {@code ||dL/dW_k||_2} per layer
 * @param valueNorms {@code ||dL/dW_v||_2} per layer
 */
public record PromptGradients(int index, int tokens, double loss, double[] keyNorms, double[] valueNorms) {
    public PromptGradients {
        keyNorms = keyNorms.clone();
        valueNorms = valueNorms.clone();
    }

    @Override
    public double[] keyNorms() {
        return keyNorms.clone();
    }

    @Override
    public double[] valueNorms() {
        return valueNorms.clone();
    }
}
