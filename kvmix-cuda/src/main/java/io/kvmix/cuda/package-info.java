/**
 * GPU backend: JCuda host code for the CUDA kernels of src/main/cuda (PTX committed as resources), which
 * mirror kvmix-core's packed formats (FORMAT.md) bit for bit. {@link io.kvmix.cuda.CudaRuntime} says
 * whether a GPU is usable; {@link io.kvmix.cuda.cache} holds the device KV cache and its fused decode
 * attention; {@code io.kvmix.cuda.bench.DeviceBench} measures them on the GPU.
 */
package io.kvmix.cuda;
