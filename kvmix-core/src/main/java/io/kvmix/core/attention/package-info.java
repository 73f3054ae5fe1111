/** Attention computed directly on what a cache stores (fused dequantize-dot), scalar reference and Vector API kernels, and the dense fp32 baseline. */
package io.kvmix.core.attention;
