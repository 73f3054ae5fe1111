/** Llama/Mistral inference on the CPU: the model (config, weights, forward) and per-sequence state (KV cache, position). */
package io.kvmix.models.llama;
