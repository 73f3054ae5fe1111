package io.kvmix.core.attention;

import io.kvmix.core.cache.FpPrecision;
import io.kvmix.core.cache.LayerKvCache;
import io.kvmix.core.cache.StreamView;
import io.kvmix.core.parallel.Parallel;
import io.kvmix.core.quant.BitWidth;
import io.kvmix.core.quant.Fp16;
import io.kvmix.core.quant.Fp16Vectors;
import io.kvmix.core.quant.PackedLayout;
import io.kvmix.core.quant.ScalarGroupQuantizer;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import java.util.Arrays;

import static io.kvmix.core.quant.Fp16Vectors.F;
import static io.kvmix.core.quant.Fp16Vectors.I;
import static io.kvmix.core.quant.Fp16Vectors.LANES;

/**
 * Vector API fused attention, parallel over query rows ({@link Parallel}).
 *
 * <p>Packed keys (lanes = tokens): with {@code k = code * s_c + m_c} per channel c,
 * {@code q . k_t = sum_c (q_c s_c) code_tc + sum_c q_c m_c}; the first sum runs a vector of tokens at a
 * time straight from the code words, the second is one bias per block.
 * Packed values (lanes = channels): with {@code v = code * s_tg + m_tg} per token t and channel group g,
 * {@code sum_t p_t v_tc = sum_t (p_t s_tg) code_tc + sum_t p_t m_tg}, a vector of channels at a time.
 * A 3-bit code is its 2-bit plane plus 4 x its 1-bit plane, so every plane is one pass of the same loop.
 */
public final class VectorFusedAttention implements FusedAttention {
    static final VectorFusedAttention INSTANCE = new VectorFusedAttention();

    private static final ThreadLocal<Scratch> SCRATCH = ThreadLocal.withInitial(Scratch::new);

    private VectorFusedAttention() {
    }

    /** Per-thread buffers, grown on demand. */
    private static final class Scratch {
        float[] scores = new float[0];   // [visible tokens] of one row
        float[] blockScores = new float[0]; // [G]
        float[] weights = new float[0];  // [G] softmax weights of one block's tokens
        float[] qs = new float[0];       // [D] q_c * s_c
        float[] ps = new float[0];       // [groups][G] p_t * s_tg
        float[] valueBias = new float[0]; // [groups] sum over the row's packed tokens of p_t * m_tg
        float[] acc = new float[0];      // [D]

        void ensure(int tokens, int headDim, int groupSize) {
            if (scores.length < tokens) {
                scores = new float[Math.max(tokens, 2 * scores.length)];
            }
            if (qs.length < headDim) {
                qs = new float[headDim];
                acc = new float[headDim];
                valueBias = new float[headDim];
            }
            if (blockScores.length < groupSize) {
                blockScores = new float[groupSize];
                weights = new float[groupSize];
            }
            if (ps.length < groupSize * headDim) {
                ps = new float[groupSize * headDim];
            }
        }
    }

    @Override
    public void attend(LayerKvCache cache, float[] q, int qOffset, int queries, int qHeads, float scale,
                       float[] out, int outOffset) {
        QueryRows rows = QueryRows.of(cache, q, qOffset, queries, qHeads, out, outOffset);
        StreamView keys = cache.keys();
        StreamView values = cache.values();
        Parallel.forRange(rows.rows(), (from, to) -> {
            for (int row = from; row < to; row++) {
                attendRow(rows, row, keys, values, q, qOffset, scale, out, outOffset);
            }
        });
    }

    private static void attendRow(QueryRows rows, int row, StreamView keys, StreamView values, float[] q,
                                  int qOffset, float scale, float[] out, int outOffset) {
        int d = rows.headDim();
        int head = rows.kvHead(row);
        int first = rows.first(row);
        int last = rows.last(row);
        int visible = last - first + 1;
        int groupSize = keys.layout() != null ? keys.layout().laneLength()
                : values.layout() != null ? values.layout().packLength() : 0;
        Scratch s = SCRATCH.get();
        s.ensure(visible, d, groupSize);
        float[] scores = s.scores;
        int qBase = qOffset + row * d;

        for (StreamView.FpRun run : keys.fpRuns()) {
            int from = Math.max(first, run.firstToken());
            int to = Math.min(last, run.firstToken() + run.count() - 1);
            for (int t = from; t <= to; t++) {
                scores[t - first] = dot(q, qBase, run, run.rowOffset(head, t, d), d) * scale;
            }
        }
        PackedLayout kLayout = keys.layout();
        for (StreamView.PackedRun run : keys.packed()) {
            int from = Math.max(first, run.blockStart() + run.from());
            int to = Math.min(last, run.blockStart() + run.to() - 1);
            if (from > to) {
                continue;
            }
            packedKeyScores(run.data(), run.matrixOffset(head), kLayout, q, qBase, scale, s);
            System.arraycopy(s.blockScores, from - run.blockStart(), scores, from - first, to - from + 1);
        }

        float sum = softmaxInPlace(scores, visible);

        float[] acc = s.acc;
        Arrays.fill(acc, 0, d, 0f);
        for (StreamView.FpRun run : values.fpRuns()) {
            int from = Math.max(first, run.firstToken());
            int to = Math.min(last, run.firstToken() + run.count() - 1);
            for (int t = from; t <= to; t++) {
                axpy(scores[t - first], run, run.rowOffset(head, t, d), acc, d);
            }
        }
        PackedLayout vLayout = values.layout();
        if (vLayout != null) {
            Arrays.fill(s.valueBias, 0, vLayout.groupsPerPack(), 0f);
        }
        for (StreamView.PackedRun run : values.packed()) {
            int from = Math.max(first, run.blockStart() + run.from());
            int to = Math.min(last, run.blockStart() + run.to() - 1);
            if (from > to) {
                continue;
            }
            int g = vLayout.packLength();
            Arrays.fill(s.weights, 0, g, 0f);
            System.arraycopy(scores, from - first, s.weights, from - run.blockStart(), to - from + 1);
            packedValueAccumulate(run.data(), run.matrixOffset(head), vLayout, s);
        }

        if (vLayout != null && !values.packed().isEmpty()) {
            addGroupBias(acc, s.valueBias, vLayout.groupLength(), d);
        }
        float inv = 1f / sum;
        int oBase = outOffset + row * d;
        int c = 0;
        for (; c <= d - LANES; c += LANES) {
            FloatVector.fromArray(F, acc, c).mul(inv).intoArray(out, oBase + c);
        }
        for (; c < d; c++) {
            out[oBase + c] = acc[c] * inv;
        }
    }

    /** {@code acc[c] += bias[c / groupLength]}: the packed values' min terms, added once per row. */
    private static void addGroupBias(float[] acc, float[] bias, int groupLength, int d) {
        for (int g = 0; g * groupLength < d; g++) {
            FloatVector vb = FloatVector.broadcast(F, bias[g]);
            int c = g * groupLength;
            int end = c + groupLength;
            for (; c + LANES <= end; c += LANES) {
                FloatVector.fromArray(F, acc, c).add(vb).intoArray(acc, c);
            }
            for (; c < end; c++) {
                acc[c] += bias[g];
            }
        }
    }

    /** Replaces {@code scores[0..n)} by {@code exp(score - max)} and returns their sum. */
    static float softmaxInPlace(float[] scores, int n) {
        int i = 0;
        float max = Float.NEGATIVE_INFINITY;
        if (n >= LANES) {
            FloatVector vmax = FloatVector.fromArray(F, scores, 0);
            for (i = LANES; i <= n - LANES; i += LANES) {
                vmax = vmax.max(FloatVector.fromArray(F, scores, i));
            }
            max = vmax.reduceLanes(VectorOperators.MAX);
        }
        for (; i < n; i++) {
            max = Math.max(max, scores[i]);
        }
        FloatVector vsum = FloatVector.zero(F);
        FloatVector vmax = FloatVector.broadcast(F, max);
        for (i = 0; i <= n - LANES; i += LANES) {
            FloatVector e = FloatVector.fromArray(F, scores, i).sub(vmax).lanewise(VectorOperators.EXP);
            e.intoArray(scores, i);
            vsum = vsum.add(e);
        }
        float sum = Fp16Vectors.sum(vsum);
        for (; i < n; i++) {
            scores[i] = (float) Math.exp(scores[i] - max);
            sum += scores[i];
        }
        return sum;
    }

    /** {@code q[qBase ..] . row} for a full-precision row of {@code d} channels. */
    static float dot(float[] q, int qBase, StreamView.FpRun run, long rowOffset, int d) {
        MemorySegment data = run.data();
        boolean fp16 = run.precision() == FpPrecision.FP16;
        FloatVector acc = FloatVector.zero(F);
        int c = 0;
        for (; c <= d - LANES; c += LANES) {
            FloatVector row = fp16 ? Fp16Vectors.load(data, rowOffset + 2L * c)
                    : FloatVector.fromMemorySegment(F, data, rowOffset + 4L * c, ByteOrder.LITTLE_ENDIAN);
            acc = row.fma(FloatVector.fromArray(F, q, qBase + c), acc);
        }
        float dot = Fp16Vectors.sum(acc);
        for (; c < d; c++) {
            dot += q[qBase + c] * run.precision().get(data, rowOffset + (long) run.precision().bytes() * c);
        }
        return dot;
    }

    /** {@code acc += p * row} for a full-precision row of {@code d} channels. */
    static void axpy(float p, StreamView.FpRun run, long rowOffset, float[] acc, int d) {
        MemorySegment data = run.data();
        boolean fp16 = run.precision() == FpPrecision.FP16;
        FloatVector vp = FloatVector.broadcast(F, p);
        int c = 0;
        for (; c <= d - LANES; c += LANES) {
            FloatVector row = fp16 ? Fp16Vectors.load(data, rowOffset + 2L * c)
                    : FloatVector.fromMemorySegment(F, data, rowOffset + 4L * c, ByteOrder.LITTLE_ENDIAN);
            row.fma(vp, FloatVector.fromArray(F, acc, c)).intoArray(acc, c);
        }
        for (; c < d; c++) {
            acc[c] += p * run.precision().get(data, rowOffset + (long) run.precision().bytes() * c);
        }
    }

    /** Scores of all G tokens of one packed key matrix into {@code s.blockScores}. */
    static void packedKeyScores(MemorySegment block, long base, PackedLayout layout, float[] q, int qBase,
                                float scale, Scratch s) {
        int d = layout.packLength();
        int tokens = layout.laneLength();
        float[] qs = s.qs;
        FloatVector biasAcc = FloatVector.zero(F);
        int c = 0;
        for (; c <= d - LANES; c += LANES) {
            FloatVector qv = FloatVector.fromArray(F, q, qBase + c);
            qv.mul(Fp16Vectors.load(block, base + layout.scaleOffset(c, 0))).intoArray(qs, c);
            biasAcc = qv.fma(Fp16Vectors.load(block, base + layout.minOffset(c, 0)), biasAcc);
        }
        float bias = Fp16Vectors.sum(biasAcc);
        for (; c < d; c++) {
            qs[c] = q[qBase + c] * Fp16.get(block, base + layout.scaleOffset(c, 0));
            bias += q[qBase + c] * Fp16.get(block, base + layout.minOffset(c, 0));
        }
        float[] scores = s.blockScores;
        Arrays.fill(scores, 0, tokens, 0f);
        for (int run = 0; run < layout.runs(); run++) {
            for (BitWidth.Plane plane : layout.bits().planes()) {
                int perWord = plane.codesPerWord();
                for (int sub = 0; sub < plane.wordsPerRun(); sub++) {
                    int firstChannel = run * BitWidth.RUN + sub * perWord;
                    int count = Math.min(perWord, d - firstChannel);
                    if (count <= 0) {
                        break;
                    }
                    accumulateCodes(block, base + layout.wordOffset(run, plane.firstWord() + sub, 0), tokens, plane,
                            count, qs, firstChannel, scores, 0);
                }
            }
        }
        FloatVector vbias = FloatVector.broadcast(F, bias);
        for (int t0 = 0; t0 < tokens; t0 += LANES) {
            FloatVector.fromArray(F, scores, t0).add(vbias).mul(scale).intoArray(scores, t0);
        }
    }

    /**
     * {@code acc[at + l] += 2^shift * sum_j code_j(l) * weights[start + j]} for lanes {@code l < lanes}
     * (a multiple of {@link Fp16Vectors#LANES}) and the first {@code count} codes of the plane words at
     * {@code wordOffset}: the inner loop of both packed kernels. Two lane vectors share each weight broadcast
     * and four independent partial sums hide the fused multiply-add latency. Vectors never cross the call
     * boundary, so it stays fast whether or not the JIT inlines it.
     */
    private static void accumulateCodes(MemorySegment block, long wordOffset, int lanes, BitWidth.Plane plane,
                                        int count, float[] weights, int start, float[] acc, int at) {
        int width = plane.width();
        int mask = plane.mask();
        float factor = 1 << plane.shift();
        int l = 0;
        for (; l + 2 * LANES <= lanes; l += 2 * LANES) {
            IntVector w0 = IntVector.fromMemorySegment(I, block, wordOffset + 4L * l, ByteOrder.LITTLE_ENDIAN);
            IntVector w1 = IntVector.fromMemorySegment(I, block, wordOffset + 4L * (l + LANES), ByteOrder.LITTLE_ENDIAN);
            FloatVector even0 = FloatVector.zero(F);
            FloatVector even1 = FloatVector.zero(F);
            FloatVector odd0 = FloatVector.zero(F);
            FloatVector odd1 = FloatVector.zero(F);
            int j = 0;
            for (; j + 2 <= count; j += 2) {
                FloatVector x = FloatVector.broadcast(F, weights[start + j]);
                even0 = ((FloatVector) w0.and(mask).convert(VectorOperators.I2F, 0)).fma(x, even0);
                even1 = ((FloatVector) w1.and(mask).convert(VectorOperators.I2F, 0)).fma(x, even1);
                w0 = w0.lanewise(VectorOperators.LSHR, width);
                w1 = w1.lanewise(VectorOperators.LSHR, width);
                FloatVector y = FloatVector.broadcast(F, weights[start + j + 1]);
                odd0 = ((FloatVector) w0.and(mask).convert(VectorOperators.I2F, 0)).fma(y, odd0);
                odd1 = ((FloatVector) w1.and(mask).convert(VectorOperators.I2F, 0)).fma(y, odd1);
                w0 = w0.lanewise(VectorOperators.LSHR, width);
                w1 = w1.lanewise(VectorOperators.LSHR, width);
            }
            if (j < count) {
                FloatVector x = FloatVector.broadcast(F, weights[start + j]);
                even0 = ((FloatVector) w0.and(mask).convert(VectorOperators.I2F, 0)).fma(x, even0);
                even1 = ((FloatVector) w1.and(mask).convert(VectorOperators.I2F, 0)).fma(x, even1);
            }
            FloatVector sum0 = even0.add(odd0);
            FloatVector sum1 = even1.add(odd1);
            if (factor != 1f) {
                sum0 = sum0.mul(factor);
                sum1 = sum1.mul(factor);
            }
            FloatVector.fromArray(F, acc, at + l).add(sum0).intoArray(acc, at + l);
            FloatVector.fromArray(F, acc, at + l + LANES).add(sum1).intoArray(acc, at + l + LANES);
        }
        for (; l < lanes; l += LANES) {
            IntVector w0 = IntVector.fromMemorySegment(I, block, wordOffset + 4L * l, ByteOrder.LITTLE_ENDIAN);
            FloatVector sum = FloatVector.zero(F);
            for (int j = 0; j < count; j++) {
                sum = ((FloatVector) w0.and(mask).convert(VectorOperators.I2F, 0))
                        .fma(FloatVector.broadcast(F, weights[start + j]), sum);
                w0 = w0.lanewise(VectorOperators.LSHR, width);
            }
            FloatVector.fromArray(F, acc, at + l).add(sum.mul(factor)).intoArray(acc, at + l);
        }
    }

    /**
     * {@code s.acc[c] += sum_t s.weights[t] * code_tc * s_tg} over one packed value matrix; the min terms
     * {@code sum_t s.weights[t] * m_tg} go to {@code s.valueBias[g]}.
     */
    static void packedValueAccumulate(MemorySegment block, long base, PackedLayout layout, Scratch s) {
        int d = layout.laneLength();
        int tokens = layout.packLength();
        int groupLength = layout.groupLength();
        int groups = layout.groupsPerPack();
        float[] w = s.weights;
        float[] ps = s.ps;      // [groups][tokens]
        float[] bias = s.valueBias;
        for (int g = 0; g < groups; g++) {
            FloatVector biasAcc = FloatVector.zero(F);
            for (int t0 = 0; t0 < tokens; t0 += LANES) {
                FloatVector wv = FloatVector.fromArray(F, w, t0);
                wv.mul(Fp16Vectors.load(block, base + layout.scaleOffset(t0, g))).intoArray(ps, g * tokens + t0);
                biasAcc = wv.fma(Fp16Vectors.load(block, base + layout.minOffset(t0, g)), biasAcc);
            }
            bias[g] += Fp16Vectors.sum(biasAcc);
        }
        float[] acc = s.acc;
        int vectorEnd = d - d % LANES;
        for (int g = 0; g * groupLength < vectorEnd; g++) {
            int firstLane = g * groupLength;
            int lanes = Math.min(groupLength, vectorEnd - firstLane) / LANES * LANES;
            for (int run = 0; run < layout.runs(); run++) {
                for (BitWidth.Plane plane : layout.bits().planes()) {
                    int perWord = plane.codesPerWord();
                    for (int sub = 0; sub < plane.wordsPerRun(); sub++) {
                        int firstToken = run * BitWidth.RUN + sub * perWord;
                        int count = Math.min(perWord, tokens - firstToken);
                        accumulateCodes(block, base + layout.wordOffset(run, plane.firstWord() + sub, firstLane), lanes,
                                plane, count, ps, g * tokens + firstToken, acc, firstLane);
                    }
                }
            }
        }
        for (int c = vectorEnd; c < d; c++) {
            int g = c / groupLength;
            for (int t = 0; t < tokens; t++) {
                acc[c] += ps[g * tokens + t] * ScalarGroupQuantizer.getCode(block, base, layout, c, t);
            }
        }
    }
}
