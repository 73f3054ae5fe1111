package io.kvmix.cuda.cache;

import io.kvmix.core.attention.FusedAttention;
import io.kvmix.core.cache.KvBytes;
import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.cache.LayerKvCache;
import io.kvmix.core.plan.LayerQuant;

import java.util.Arrays;

/** {@link BatchKvCache} on the CPU: one kvmix-core {@link LayerKvCache} per sequence, Vector API attention. */
public final class HostBatchKvCache implements BatchKvCache {
    private final KvGeometry geometry;
    private final int layer;
    private final LayerQuant quant;
    private final int groupSize;
    private final LayerKvCache[] sequences;

    public HostBatchKvCache(KvGeometry geometry, int layer, LayerQuant quant, int groupSize, int batch) {
        if (batch <= 0) {
            throw new IllegalArgumentException("layer " + layer + ": batch=" + batch);
        }
        this.geometry = geometry;
        this.layer = layer;
        this.quant = quant;
        this.groupSize = groupSize;
        this.sequences = new LayerKvCache[batch];
        try {
            for (int s = 0; s < batch; s++) {
                sequences[s] = LayerKvCache.quantized(geometry, layer, quant, groupSize);
            }
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    /** The CPU cache of one sequence. */
    public LayerKvCache sequence(int sequence) {
        return sequences[sequence];
    }

    @Override
    public int batch() {
        return sequences.length;
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
    public LayerQuant quant() {
        return quant;
    }

    @Override
    public int groupSize() {
        return groupSize;
    }

    @Override
    public boolean onDevice() {
        return false;
    }

    @Override
    public int length(int sequence) {
        return sequences[sequence].length();
    }

    @Override
    public void append(float[] keys, float[] values, int[] tokens) {
        BatchRows.check(this, keys, values, tokens);
        int row = 0;
        for (int s = 0; s < sequences.length; s++) {
            if (tokens[s] > 0) {
                int offset = row * geometry.rowWidth();
                sequences[s].append(keys, offset, values, offset, tokens[s]);
            }
            row += tokens[s];
        }
    }

    @Override
    public void attend(float[] queries, int queryHeads, float scale, float[] out) {
        int rowFloats = queryHeads * geometry.headDim();
        BatchRows.checkQueries(this, queries, queryHeads, out);
        for (int s = 0; s < sequences.length; s++) {
            FusedAttention.vector().attend(sequences[s], queries, s * rowFloats, 1, queryHeads, scale, out,
                    s * rowFloats);
        }
    }

    @Override
    public KvBytes keyBytes(int sequence) {
        return sequences[sequence].keyBytes();
    }

    @Override
    public KvBytes valueBytes(int sequence) {
        return sequences[sequence].valueBytes();
    }

    @Override
    public int keyFpLength(int sequence) {
        return sequences[sequence].keyFpLength();
    }

    @Override
    public int valueFpLength(int sequence) {
        return sequences[sequence].valueFpLength();
    }

    @Override
    public float[] storedKeys(int sequence, int fromToken) {
        return stored(sequence, fromToken, true);
    }

    @Override
    public float[] storedValues(int sequence, int fromToken) {
        return stored(sequence, fromToken, false);
    }

    private float[] stored(int sequence, int fromToken, boolean keys) {
        LayerKvCache cache = sequences[sequence];
        int heads = geometry.kvHeads();
        int d = geometry.headDim();
        float[] out = new float[(cache.length() - fromToken) * heads * d];
        int i = 0;
        for (int t = fromToken; t < cache.length(); t++) {
            for (int h = 0; h < heads; h++) {
                for (int c = 0; c < d; c++) {
                    out[i++] = keys ? cache.storedKey(t, h, c) : cache.storedValue(t, h, c);
                }
            }
        }
        return out;
    }

    @Override
    public void close() {
        Arrays.stream(sequences).filter(c -> c != null).forEach(LayerKvCache::close);
    }
}
