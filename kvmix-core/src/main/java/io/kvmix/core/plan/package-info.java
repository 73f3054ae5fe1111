/** Quantization plans: per-layer bits and residual policies, validation, and the JSON plan files (own format and the reference's quant_bits dict). */
package io.kvmix.core.plan;
