package io.kvmix.core.cache;

/**
 * What a KV cache needs to know about a model: its attention shape and limits.
 *
 * @param layers        decoder layers
 * @param queryHeads    attention (query) heads
 * @param kvHeads       key/value heads (fewer than queryHeads with grouped-query attention)
 * @param headDim       channels per head
 * @param maxTokens     capacity of each sequence's cache
 * @param slidingWindow attention window, 0 for none (Mistral: {@code sliding_window})
 */
public record ModelKvShape(int layers, int queryHeads, int kvHeads, int headDim, int maxTokens, int slidingWindow) {
    public ModelKvShape {
        if (layers <= 0 || queryHeads <= 0 || kvHeads <= 0 || queryHeads % kvHeads != 0) {
            throw new IllegalArgumentException("bad model shape: layers=" + layers + " queryHeads=" + queryHeads
                    + " kvHeads=" + kvHeads + " (query heads must be a multiple of KV heads)");
        }
    }

    public KvGeometry layerGeometry() {
        return new KvGeometry(kvHeads, headDim, maxTokens, slidingWindow);
    }

    /** Bytes of one token's keys and values in fp16 over all layers: {@code 2 * layers * kvHeads * headDim * 2}. */
    public long fp16BytesPerToken() {
        return 4L * layers * kvHeads * headDim;
    }

    /** The softmax temperature of standard attention: {@code 1 / sqrt(headDim)}. */
    public float attentionScale() {
        return (float) (1 / Math.sqrt(headDim));
    }
}
