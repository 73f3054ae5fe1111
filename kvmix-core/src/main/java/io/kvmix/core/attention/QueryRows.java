package io.kvmix.core.attention;

import io.kvmix.core.cache.LayerKvCache;

/**
 * The rows of one attention call: row {@code r = i * qHeads + qh} is query token {@code i}, query head
 * {@code qh}. Knows each row's KV head and visible token range; validates the call once.
 */
record QueryRows(int length, int queries, int qHeads, int kvHeads, int headDim, int window) {

    static QueryRows of(LayerKvCache cache, float[] q, int qOffset, int queries, int qHeads, float[] out,
                        int outOffset) {
        int kvHeads = cache.geometry().kvHeads();
        int headDim = cache.geometry().headDim();
        String where = "layer " + cache.layer() + " attention: ";
        if (qHeads <= 0 || qHeads % kvHeads != 0) {
            throw new IllegalArgumentException(where + qHeads + " query heads is not a multiple of " + kvHeads
                    + " KV heads");
        }
        if (queries <= 0 || queries > cache.lastAppended()) {
            throw new IllegalArgumentException(where + queries + " queries, but the last append added "
                    + cache.lastAppended() + " tokens (queries are the newest positions)");
        }
        long need = (long) queries * qHeads * headDim;
        if (qOffset < 0 || qOffset + need > q.length) {
            throw new IllegalArgumentException(where + "q needs " + need + " floats from " + qOffset + ", has " + q.length);
        }
        if (outOffset < 0 || outOffset + need > out.length) {
            throw new IllegalArgumentException(where + "out needs " + need + " floats from " + outOffset + ", has "
                    + out.length);
        }
        return new QueryRows(cache.length(), queries, qHeads, kvHeads, headDim, cache.geometry().slidingWindow());
    }

    int rows() {
        return queries * qHeads;
    }

    int kvHead(int row) {
        return (row % qHeads) / (qHeads / kvHeads);
    }

    /** Position of the row's query token; the last visible token. */
    int last(int row) {
        return length - queries + row / qHeads;
    }

    /** First visible token of the row. */
    int first(int row) {
        return window > 0 ? Math.max(0, last(row) - window + 1) : 0;
    }
}
