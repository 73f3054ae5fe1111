/** Bit widths and their planes, the packed-matrix layout of FORMAT.md, fp16 helpers, and the scalar and Vector API group quantizers (bit-identical). */
package io.kvmix.core.quant;
