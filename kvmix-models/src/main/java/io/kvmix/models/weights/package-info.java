/**
 * Hugging Face safetensors checkpoints, memory-mapped, and the Llama/Mistral weights in them.
 *
 * <ul>
 *   <li>{@link io.kvmix.models.weights.SafetensorsFile}: one file, mapped read-only with FFM, its
 *       header validated against the file's actual size.</li>
 *   <li>{@link io.kvmix.models.weights.Checkpoint}: a model directory, single-file or sharded with
 *       an index, every shard mapped once.</li>
 *   <li>{@link io.kvmix.models.weights.Tensor}: a named view of stored bytes (F16, BF16 or F32),
 *       with fp32 conversion for the few places that want it.</li>
 *   <li>{@link io.kvmix.models.weights.LlamaWeights}: the model's tensors by role, checked name by
 *       name and shape by shape against a {@link io.kvmix.models.config.ModelConfig}.</li>
 * </ul>
 *
 * <p>Weights are never copied to the heap: they stay in the page cache in their stored type, so a
 * 7B fp16 model costs ~14 GB, and kernels read them directly. Every problem with a checkpoint is a
 * {@link io.kvmix.models.weights.CheckpointException} whose message names the file and tensor.
 */
package io.kvmix.models.weights;
