package io.kvmix.core.attention;

import io.kvmix.core.cache.LayerKvCache;
import io.kvmix.core.cache.StreamView;
import io.kvmix.core.quant.PackedLayout;
import io.kvmix.core.quant.ScalarGroupQuantizer;

import java.util.Arrays;

/**
 * Reference fused attention: one row at a time, run by run, each stored element decoded where it is
 * used ({@code code * scale + min} for packed tokens, fp16 or fp32 -> fp32 for FP rows).
 */
public final class ScalarFusedAttention implements FusedAttention {
    static final ScalarFusedAttention INSTANCE = new ScalarFusedAttention();

    private ScalarFusedAttention() {
    }

    @Override
    public void attend(LayerKvCache cache, float[] q, int qOffset, int queries, int qHeads, float scale,
                       float[] out, int outOffset) {
        QueryRows rows = QueryRows.of(cache, q, qOffset, queries, qHeads, out, outOffset);
        StreamView keys = cache.keys();
        StreamView values = cache.values();
        int d = rows.headDim();
        float[] scores = new float[rows.length()];
        float[] acc = new float[d];
        for (int row = 0; row < rows.rows(); row++) {
            int head = rows.kvHead(row);
            int first = rows.first(row);
            int last = rows.last(row);
            int qBase = qOffset + row * d;
            Arrays.fill(scores, Float.NEGATIVE_INFINITY);
            for (StreamView.FpRun run : keys.fpRuns()) {
                for (int t = Math.max(first, run.firstToken()); t <= Math.min(last, run.firstToken() + run.count() - 1); t++) {
                    long at = run.rowOffset(head, t, d);
                    float dot = 0f;
                    for (int c = 0; c < d; c++) {
                        dot += q[qBase + c] * run.precision().get(run.data(), at + (long) run.precision().bytes() * c);
                    }
                    scores[t] = dot * scale;
                }
            }
            PackedLayout kLayout = keys.layout();
            for (StreamView.PackedRun run : keys.packed()) {
                long base = run.matrixOffset(head);
                for (int t = Math.max(first, run.blockStart() + run.from());
                     t <= Math.min(last, run.blockStart() + run.to() - 1); t++) {
                    float dot = 0f;
                    for (int c = 0; c < d; c++) {
                        dot += q[qBase + c] * ScalarGroupQuantizer.dequantize(run.data(), base, kLayout,
                                t - run.blockStart(), c);
                    }
                    scores[t] = dot * scale;
                }
            }
            float max = Float.NEGATIVE_INFINITY;
            for (int t = first; t <= last; t++) {
                max = Math.max(max, scores[t]);
            }
            float sum = 0f;
            for (int t = first; t <= last; t++) {
                scores[t] = (float) Math.exp(scores[t] - max);
                sum += scores[t];
            }
            Arrays.fill(acc, 0f);
            for (StreamView.FpRun run : values.fpRuns()) {
                for (int t = Math.max(first, run.firstToken()); t <= Math.min(last, run.firstToken() + run.count() - 1); t++) {
                    long at = run.rowOffset(head, t, d);
                    for (int c = 0; c < d; c++) {
                        acc[c] += scores[t] * run.precision().get(run.data(), at + (long) run.precision().bytes() * c);
                    }
                }
            }
            PackedLayout vLayout = values.layout();
            for (StreamView.PackedRun run : values.packed()) {
                long base = run.matrixOffset(head);
                for (int t = Math.max(first, run.blockStart() + run.from());
                     t <= Math.min(last, run.blockStart() + run.to() - 1); t++) {
                    for (int c = 0; c < d; c++) {
                        acc[c] += scores[t] * ScalarGroupQuantizer.dequantize(run.data(), base, vLayout, c,
                                t - run.blockStart());
                    }
                }
            }
            int oBase = outOffset + row * d;
            for (int c = 0; c < d; c++) {
                out[oBase + c] = acc[c] / sum;
            }
        }
    }
}
