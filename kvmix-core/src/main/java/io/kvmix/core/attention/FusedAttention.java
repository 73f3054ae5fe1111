package io.kvmix.core.attention;

import io.kvmix.core.cache.LayerKvCache;

/**
 * Attention of the last step's queries over a {@link LayerKvCache}, computed directly on what the
 * cache stores (fp16 rows and packed blocks): scores, softmax and the weighted value sum, never a
 * dequantized copy of the history.
 *
 * <p>Causal: query {@code i} of {@code queries} sits at position {@code p = length - queries + i} and
 * sees tokens {@code p - W + 1 .. p} with a sliding window W (the cache's), else {@code 0 .. p}.
 * Grouped-query attention: query head {@code qh} reads KV head {@code qh / (qHeads / kvHeads)}.
 */
public interface FusedAttention {

    /**
     * @param q       queries {@code [queries][qHeads][headDim]} fp32 from {@code qOffset}
     * @param scale   softmax temperature, usually {@code 1 / sqrt(headDim)}
     * @param out     output {@code [queries][qHeads][headDim]} from {@code outOffset}
     */
    void attend(LayerKvCache cache, float[] q, int qOffset, int queries, int qHeads, float scale,
                float[] out, int outOffset);

    /** The Vector API kernel, parallel over query rows on the common fork-join pool. */
    static FusedAttention vector() {
        return VectorFusedAttention.INSTANCE;
    }

    /** The scalar reference. */
    static FusedAttention scalar() {
        return ScalarFusedAttention.INSTANCE;
    }
}
