/**
 * Hugging Face {@code config.json} of Llama and Mistral checkpoints, read into a validated
 * {@link io.kvmix.models.config.ModelConfig}.
 *
 * <p>This is the single source of a model's shapes for the rest of the library: the weight loader
 * checks tensors against it, the forward pass sizes its projections, RoPE tables and attention
 * window from it, and the KV cache sizes itself from its layer count, KV heads and head width.
 * The parser reads every spelling transformers accepts ({@code rope_theta} or
 * {@code rope_parameters}, {@code torch_dtype} or {@code dtype}, optional {@code head_dim},
 * {@code sliding_window} null or a number, {@code eos_token_id} as an int or a list), applies
 * transformers' per-family defaults, and rejects by name anything the Java forward would compute
 * differently (scaled RoPE, biases, activations other than SiLU, other architectures, quantized
 * weights).
 */
package io.kvmix.models.config;
