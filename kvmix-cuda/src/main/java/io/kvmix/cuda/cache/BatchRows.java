package io.kvmix.cuda.cache;

/** Argument checks shared by the {@link BatchKvCache} implementations, with messages naming the layer. */
final class BatchRows {
    private BatchRows() {
    }

    /** Checks {@code tokens} and that {@code keys}/{@code values} hold their rows; returns the total rows. */
    static int check(BatchKvCache cache, float[] keys, float[] values, int[] tokens) {
        String where = "layer " + cache.layer() + " append: ";
        if (tokens.length != cache.batch()) {
            throw new IllegalArgumentException(where + tokens.length + " token counts for a batch of " + cache.batch());
        }
        long rows = 0;
        for (int s = 0; s < tokens.length; s++) {
            if (tokens[s] < 0) {
                throw new IllegalArgumentException(where + "sequence " + s + ": " + tokens[s] + " tokens");
            }
            if (cache.length(s) + (long) tokens[s] > cache.geometry().maxTokens()) {
                throw new IllegalStateException(where + "sequence " + s + ": appending " + tokens[s] + " tokens to "
                        + cache.length(s) + " exceeds the cache capacity of " + cache.geometry().maxTokens() + " tokens");
            }
            rows += tokens[s];
        }
        long floats = rows * cache.geometry().rowWidth();
        if (keys.length != floats || values.length != floats) {
            throw new IllegalArgumentException(where + rows + " rows need " + floats + " floats; keys have "
                    + keys.length + ", values " + values.length);
        }
        return (int) rows;
    }

    static void checkQueries(BatchKvCache cache, float[] queries, int queryHeads, float[] out) {
        String where = "layer " + cache.layer() + " attention: ";
        int kvHeads = cache.geometry().kvHeads();
        if (queryHeads <= 0 || queryHeads % kvHeads != 0) {
            throw new IllegalArgumentException(where + queryHeads + " query heads is not a multiple of " + kvHeads
                    + " KV heads");
        }
        long floats = (long) cache.batch() * queryHeads * cache.geometry().headDim();
        if (queries.length != floats || out.length != floats) {
            throw new IllegalArgumentException(where + "queries and out must hold [" + cache.batch() + "]["
                    + queryHeads + "][" + cache.geometry().headDim() + "] floats; have " + queries.length + " and "
                    + out.length);
        }
        for (int s = 0; s < cache.batch(); s++) {
            if (cache.length(s) == 0) {
                throw new IllegalStateException(where + "sequence " + s + " is empty");
            }
        }
    }
}
