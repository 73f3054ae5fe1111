/** Dense CPU operations of a transformer forward pass on memory-mapped weights: matmul in the stored dtype, RMSNorm, rotary embeddings. */
package io.kvmix.models.ops;
