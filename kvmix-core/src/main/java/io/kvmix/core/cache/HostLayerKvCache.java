package io.kvmix.core.cache;

import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.quant.Fp16;
import io.kvmix.core.quant.GroupQuantizer;
import io.kvmix.core.quant.QuantizationException;

import java.lang.foreign.Arena;

/** CPU implementation of {@link LayerKvCache}: two {@link KvStream}s in one shared off-heap arena. */
final class HostLayerKvCache implements LayerKvCache {
    /** fp16 tokens per chunk of a full-precision cache. */
    static final int FULL_PRECISION_CHUNK = 64;

    private final KvGeometry geometry;
    private final int layer;
    private final Arena arena = Arena.ofShared();
    private final KvStream keys;
    private final KvStream values;
    private int lastAppended;

    HostLayerKvCache(KvGeometry geometry, int layer, LayerQuant quant, int groupSize, FpPrecision precision) {
        this.geometry = geometry;
        this.layer = layer;
        if (quant != null && (groupSize <= 0 || groupSize % 32 != 0)) {
            throw new IllegalArgumentException("layer " + layer + ": group_size=" + groupSize
                    + ", must be a positive multiple of 32");
        }
        if (quant != null && geometry.headDim() % Math.min(groupSize, geometry.headDim()) != 0) {
            throw new IllegalArgumentException("layer " + layer + ": value group " + groupSize
                    + " does not divide head_dim " + geometry.headDim());
        }
        int sinks = quant == null ? 0 : quant.sinks();
        GroupQuantizer quantizer = GroupQuantizer.fastest();
        this.keys = new KvStream(true, layer, geometry, quant == null ? null : quant.keys(), groupSize, sinks,
                precision, quantizer, arena);
        this.values = new KvStream(false, layer, geometry, quant == null ? null : quant.values(), groupSize, sinks,
                precision, quantizer, arena);
    }

    @Override
    public KvGeometry geometry() {
        return geometry;
    }

    @Override
    public int layer() {
        return layer;
    }

    @Override
    public int length() {
        return keys.length();
    }

    @Override
    public int lastAppended() {
        return lastAppended;
    }

    @Override
    public void append(float[] keyRows, int keysOffset, float[] valueRows, int valuesOffset, int tokens) {
        if (tokens <= 0) {
            throw new IllegalArgumentException("layer " + layer + ": append of " + tokens + " tokens");
        }
        if (length() + (long) tokens > geometry.maxTokens()) {
            throw new IllegalStateException("layer " + layer + ": appending " + tokens + " tokens to " + length()
                    + " exceeds the cache capacity of " + geometry.maxTokens() + " tokens");
        }
        check(keyRows, keysOffset, tokens, "keys");
        check(valueRows, valuesOffset, tokens, "values");
        keys.write(keyRows, keysOffset, tokens);
        values.write(valueRows, valuesOffset, tokens);
        lastAppended = tokens;
        keys.settle();
        values.settle();
    }

    private void check(float[] rows, int offset, int tokens, String stream) {
        int width = geometry.rowWidth();
        if (offset < 0 || offset + (long) tokens * width > rows.length) {
            throw new IllegalArgumentException("layer " + layer + " " + stream + ": need " + tokens + " x " + width
                    + " floats from offset " + offset + ", array has " + rows.length);
        }
        for (int i = 0; i < tokens * width; i++) {
            float x = rows[offset + i];
            if (!Fp16.representable(x)) {
                int token = i / width;
                int head = (i % width) / geometry.headDim();
                int channel = i % geometry.headDim();
                throw new QuantizationException("layer " + layer + " " + stream + ", kv-head " + head + ", token "
                        + (length() + token) + ", channel " + channel + ": value " + x
                        + " is not finite in fp16 (|x| must be < 65520)");
            }
        }
    }

    @Override
    public StreamView keys() {
        return keys.view();
    }

    @Override
    public StreamView values() {
        return values.view();
    }

    @Override
    public KvBytes bytes() {
        return keys.bytes().plus(values.bytes());
    }

    @Override
    public KvBytes keyBytes() {
        return keys.bytes();
    }

    @Override
    public KvBytes valueBytes() {
        return values.bytes();
    }

    @Override
    public int keyFpLength() {
        return keys.fpBufferLength();
    }

    @Override
    public int valueFpLength() {
        return values.fpBufferLength();
    }

    @Override
    public float storedKey(int token, int head, int channel) {
        return keys.storedValue(token, head, channel);
    }

    @Override
    public float storedValue(int token, int head, int channel) {
        return values.storedValue(token, head, channel);
    }

    @Override
    public void close() {
        if (arena.scope().isAlive()) {
            arena.close();
        }
    }
}
