package io.kvmix.models.weights;

import io.kvmix.models.config.ModelConfig;

import java.nio.file.Path;

/**
 * A model directory opened for inference: its config, its weights, and the memory mapping they
 * live in, which this object owns. Made by {@link LlamaWeights#open(Path)}.
 *
 * <pre>{@code
 * try (MappedModel model = LlamaWeights.open(Path.of("models/llama-2-7b"))) {
 *     Tensor wq0 = model.weights().layer(0).qProj(); // (4096, 4096)
 * }
 * }</pre>
 */
public final class MappedModel implements AutoCloseable {
    private final ModelConfig config;
    private final Checkpoint checkpoint;
    private final LlamaWeights weights;

    MappedModel(ModelConfig config, Checkpoint checkpoint, LlamaWeights weights) {
        this.config = config;
        this.checkpoint = checkpoint;
        this.weights = weights;
    }

    /** The parsed {@code config.json}. */
    public ModelConfig config() {
        return config;
    }

    /** The checked weights; readable until {@link #close()}. */
    public LlamaWeights weights() {
        return weights;
    }

    /** The mapped files, for tensors beyond the model's own (none in a valid checkpoint). */
    public Checkpoint checkpoint() {
        return checkpoint;
    }

    public Path directory() {
        return checkpoint.directory();
    }

    /** Unmaps the checkpoint; the weights stop being readable. */
    @Override
    public void close() {
        checkpoint.close();
    }
}
