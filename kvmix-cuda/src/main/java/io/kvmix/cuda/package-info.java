/**
 * GPU backend (not implemented yet): JCuda host code and CUDA kernels that mirror kvmix-core's
 * packed formats (FORMAT.md) bit for bit: group quantize/pack, O(1) append into a device-side cache,
 * and fused decode attention on the packed data.
 */
package io.kvmix.cuda;
