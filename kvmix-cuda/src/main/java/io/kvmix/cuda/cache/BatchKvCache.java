package io.kvmix.cuda.cache;

import io.kvmix.core.cache.KvBytes;
import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.plan.LayerQuant;

/**
 * The key/value cache of one layer for a batch of sequences, with fused decode attention over it: what
 * a batched inference loop holds per layer, on the GPU ({@link DeviceBatchKvCache}) or on the CPU
 * ({@link HostBatchKvCache}, one kvmix-core {@link io.kvmix.core.cache.LayerKvCache} per sequence).
 * Both follow the {@code LayerKvCache} contract per sequence: fp16 rounding, residual policy, sinks,
 * sliding window, exact byte accounting; {@link KvCaches} picks one.
 *
 * <p>Sequences may have different lengths (a ragged batch). An append adds {@code tokens[s]} tokens to
 * sequence {@code s} (0 leaves it untouched); its rows are {@code [sum of tokens][kvHeads * headDim]} fp32,
 * sequence 0's rows first.
 */
public interface BatchKvCache extends AutoCloseable {

    int batch();

    KvGeometry geometry();

    /** Layer index (used in error messages). */
    int layer();

    LayerQuant quant();

    int groupSize();

    /** True when the data lives in GPU memory. */
    boolean onDevice();

    /** Tokens appended to sequence {@code sequence}. */
    int length(int sequence);

    /**
     * Appends {@code tokens[s]} rows to each sequence {@code s}. Input is validated: a value that is not
     * finite in fp16 or a capacity overflow throws naming layer, stream, sequence, head, token and channel.
     * On such an error the GPU cache undoes the whole append; the CPU cache has appended the sequences
     * before the offending one (each sequence's own append is all or nothing, as in kvmix-core).
     */
    void append(float[] keys, float[] values, int[] tokens);

    /**
     * Decode attention: one query per sequence at its newest position, over everything the sequence's
     * last append left visible (packed blocks decoded in place, the last append's own tokens in full
     * precision, the sliding window honoured), GQA when {@code queryHeads > kvHeads}.
     *
     * @param queries {@code [batch][queryHeads][headDim]} fp32
     * @param scale   softmax temperature, usually {@code 1 / sqrt(headDim)}
     * @param out     {@code [batch][queryHeads][headDim]} fp32
     */
    void attend(float[] queries, int queryHeads, float scale, float[] out);

    /** Exact live bytes of one sequence's keys (FORMAT.md section 4.1). */
    KvBytes keyBytes(int sequence);

    KvBytes valueBytes(int sequence);

    default KvBytes bytes(int sequence) {
        return keyBytes(sequence).plus(valueBytes(sequence));
    }

    /** Tokens in the keys' FP buffer of {@code sequence} (sinks excluded). */
    int keyFpLength(int sequence);

    int valueFpLength(int sequence);

    /**
     * Keys of tokens {@code fromToken .. length - 1} of {@code sequence} decoded exactly as stored,
     * {@code [tokens][kvHeads][headDim]}; for tests. Tokens freed by the sliding window cannot be asked for.
     */
    float[] storedKeys(int sequence, int fromToken);

    float[] storedValues(int sequence, int fromToken);

    @Override
    void close();
}
