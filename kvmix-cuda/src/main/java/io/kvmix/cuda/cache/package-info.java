/**
 * Batched per-layer KV caches: {@link io.kvmix.cuda.cache.DeviceBatchKvCache} on the GPU (append +
 * quantize kernel, split-K fused decode attention), {@link io.kvmix.cuda.cache.HostBatchKvCache} on the CPU,
 * {@link io.kvmix.cuda.cache.KvCaches} choosing between them.
 */
package io.kvmix.cuda.cache;
