/** Per-layer, per-sequence KV caches (fp16 and mixed precision): FP buffer, packed blocks in pages, residual policies, sinks, sliding-window freeing and exact byte accounting. */
package io.kvmix.core.cache;
