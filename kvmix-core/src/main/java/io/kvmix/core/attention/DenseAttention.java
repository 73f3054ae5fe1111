package io.kvmix.core.attention;

import io.kvmix.core.parallel.Parallel;
import io.kvmix.core.quant.Fp16Vectors;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;


import static io.kvmix.core.quant.Fp16Vectors.F;
import static io.kvmix.core.quant.Fp16Vectors.LANES;

/**
 * Decode attention over dense fp32 keys and values: the baseline the packed kernels are measured
 * against, written as fast as the Vector API allows (four tokens per step for the scores, a register
 * tile of channels for the value sum), parallel over query heads on the same threads as {@link VectorFusedAttention} ({@link Parallel}).
 */
public final class DenseAttention {
    private static final ThreadLocal<float[]> SCORES = ThreadLocal.withInitial(() -> new float[0]);

    private DenseAttention() {
    }

    /**
     * One query token: {@code q [qHeads][d]}, {@code keys} and {@code values} {@code [kvHeads][tokens][d]}
     * fp32, {@code out [qHeads][d]}. Attends to all {@code tokens} (the query is the newest).
     */
    public static void decode(float[] q, float[] keys, float[] values, int tokens, int qHeads, int kvHeads, int d,
                              float scale, float[] out) {
        int group = qHeads / kvHeads;
        Parallel.forRange(qHeads, (from, to) -> {
            for (int qh = from; qh < to; qh++) {
                decodeHead(q, keys, values, tokens, (long) (qh / group) * tokens * d, qh * d, d, scale, out);
            }
        });
    }

    private static void decodeHead(float[] q, float[] keys, float[] values, int tokens, long headBase, int qBase,
                                   int d, float scale, float[] out) {
        float[] scores = SCORES.get();
        if (scores.length < tokens) {
            scores = new float[tokens];
            SCORES.set(scores);
        }
        int base = Math.toIntExact(headBase);
        int t = 0;
        for (; t + 4 <= tokens; t += 4) {
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = FloatVector.zero(F);
            FloatVector a2 = FloatVector.zero(F);
            FloatVector a3 = FloatVector.zero(F);
            int row = base + t * d;
            int c = 0;
            for (; c <= d - LANES; c += LANES) {
                FloatVector qv = FloatVector.fromArray(F, q, qBase + c);
                a0 = FloatVector.fromArray(F, keys, row + c).fma(qv, a0);
                a1 = FloatVector.fromArray(F, keys, row + d + c).fma(qv, a1);
                a2 = FloatVector.fromArray(F, keys, row + 2 * d + c).fma(qv, a2);
                a3 = FloatVector.fromArray(F, keys, row + 3 * d + c).fma(qv, a3);
            }
            float s0 = Fp16Vectors.sum(a0);
            float s1 = Fp16Vectors.sum(a1);
            float s2 = Fp16Vectors.sum(a2);
            float s3 = Fp16Vectors.sum(a3);
            for (; c < d; c++) {
                s0 += q[qBase + c] * keys[row + c];
                s1 += q[qBase + c] * keys[row + d + c];
                s2 += q[qBase + c] * keys[row + 2 * d + c];
                s3 += q[qBase + c] * keys[row + 3 * d + c];
            }
            scores[t] = s0 * scale;
            scores[t + 1] = s1 * scale;
            scores[t + 2] = s2 * scale;
            scores[t + 3] = s3 * scale;
        }
        for (; t < tokens; t++) {
            float s = 0;
            for (int c = 0; c < d; c++) {
                s += q[qBase + c] * keys[base + t * d + c];
            }
            scores[t] = s * scale;
        }
        float sum = VectorFusedAttention.softmaxInPlace(scores, tokens);
        float inv = 1f / sum;
        int c0 = 0;
        // A tile of four vectors of channels stays in registers across all tokens.
        for (; c0 + 4 * LANES <= d; c0 += 4 * LANES) {
            FloatVector o0 = FloatVector.zero(F);
            FloatVector o1 = FloatVector.zero(F);
            FloatVector o2 = FloatVector.zero(F);
            FloatVector o3 = FloatVector.zero(F);
            for (int s = 0; s < tokens; s++) {
                FloatVector p = FloatVector.broadcast(F, scores[s]);
                int row = base + s * d + c0;
                o0 = FloatVector.fromArray(F, values, row).fma(p, o0);
                o1 = FloatVector.fromArray(F, values, row + LANES).fma(p, o1);
                o2 = FloatVector.fromArray(F, values, row + 2 * LANES).fma(p, o2);
                o3 = FloatVector.fromArray(F, values, row + 3 * LANES).fma(p, o3);
            }
            o0.mul(inv).intoArray(out, qBase + c0);
            o1.mul(inv).intoArray(out, qBase + c0 + LANES);
            o2.mul(inv).intoArray(out, qBase + c0 + 2 * LANES);
            o3.mul(inv).intoArray(out, qBase + c0 + 3 * LANES);
        }
        for (; c0 < d; c0++) {
            float acc = 0;
            for (int s = 0; s < tokens; s++) {
                acc += scores[s] * values[base + s * d + c0];
            }
            out[qBase + c0] = acc * inv;
        }
    }
}
