/** Evaluation: decode perplexity through the cache (DESIGN.md accuracy protocol). */
package io.kvmix.models.eval;
