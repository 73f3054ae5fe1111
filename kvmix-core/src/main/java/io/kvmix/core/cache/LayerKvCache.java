package io.kvmix.core.cache;

import io.kvmix.core.plan.LayerQuant;

/**
 * The key/value cache of one layer of one sequence.
 *
 * <p>A step appends the new tokens' keys and values ({@code [tokens][kvHeads * headDim]} fp32, e.g.
 * straight from {@code k_proj}/{@code v_proj} after RoPE); the cache rounds them to fp16, applies its
 * residual policy (whole groups of G leave the FP buffer for packed blocks) and then serves that
 * step's queries through {@link #keys()}/{@link #values()}. Storage is off-heap and freed by
 * {@link #close()}.
 */
public interface LayerKvCache extends AutoCloseable {

    /** A cache that keeps every token in fp16. */
    static LayerKvCache fullPrecision(KvGeometry geometry, int layer) {
        return fullPrecision(geometry, layer, FpPrecision.FP16);
    }

    /** A cache that keeps every token in {@code precision} (fp32 only as an explicit option). */
    static LayerKvCache fullPrecision(KvGeometry geometry, int layer, FpPrecision precision) {
        return new HostLayerKvCache(geometry, layer, null, HostLayerKvCache.FULL_PRECISION_CHUNK, precision);
    }

    /** A mixed-precision cache for one layer of a plan with group size {@code groupSize}. */
    static LayerKvCache quantized(KvGeometry geometry, int layer, LayerQuant quant, int groupSize) {
        return new HostLayerKvCache(geometry, layer, quant, groupSize, FpPrecision.FP16);
    }

    KvGeometry geometry();

    /** Layer index (used in error messages). */
    int layer();

    /** Tokens appended so far. */
    int length();

    /** Tokens appended by the last step; its queries are the last {@code lastAppended()} positions. */
    int lastAppended();

    /**
     * Appends {@code tokens} tokens. Input is validated before anything is stored: a length mismatch,
     * a value that is not finite in fp16 or a capacity overflow throws and leaves the cache unchanged.
     * A group whose scale overflows fp16 throws after the tokens are stored, leaving them in the FP buffer.
     */
    void append(float[] keys, int keysOffset, float[] values, int valuesOffset, int tokens);

    /** Keys as the last step's queries see them. */
    StreamView keys();

    /** Values as the last step's queries see them. */
    StreamView values();

    /** Exact live bytes (keys + values). */
    KvBytes bytes();

    /** Exact live bytes of the keys alone. */
    KvBytes keyBytes();

    KvBytes valueBytes();

    /** Tokens in the keys' and values' FP buffers (sinks excluded), for policy checks. */
    int keyFpLength();

    int valueFpLength();

    /** Decoded key of (token, head, channel) exactly as stored; for tests, never used by attention. */
    float storedKey(int token, int head, int channel);

    float storedValue(int token, int head, int channel);

    @Override
    void close();
}
