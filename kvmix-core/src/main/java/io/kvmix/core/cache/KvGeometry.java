package io.kvmix.core.cache;

/**
 * Shape and limits of one layer's KV cache for one sequence.
 *
 * @param kvHeads       key/value heads H
 * @param headDim       channels per head D
 * @param maxTokens     capacity: an append past it fails and says so
 * @param slidingWindow attention window W (a query at position p sees tokens p-W+1 .. p), 0 for none;
 *                      blocks that no later query can see are freed
 */
public record KvGeometry(int kvHeads, int headDim, int maxTokens, int slidingWindow) {
    public KvGeometry {
        if (kvHeads <= 0 || headDim <= 0 || maxTokens <= 0 || slidingWindow < 0) {
            throw new IllegalArgumentException("bad KV geometry: kvHeads=" + kvHeads + " headDim=" + headDim
                    + " maxTokens=" + maxTokens + " slidingWindow=" + slidingWindow);
        }
    }

    /** Floats per token row of one stream: {@code kvHeads * headDim}. */
    public int rowWidth() {
        return kvHeads * headDim;
    }

    public boolean hasSlidingWindow() {
        return slidingWindow > 0;
    }
}
