package io.kvmix.core.attention;

import io.kvmix.core.cache.LayerKvCache;
import io.kvmix.core.cache.StreamView;
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
import java.util.stream.IntStream;

import static io.kvmix.core.quant.Fp16Vectors.F;
import static io.kvmix.core.quant.Fp16Vectors.I;
import static io.kvmix.core.quant.Fp16Vectors.LANES;

/**
 * Vector API fused attention, parallel over query rows.
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
        float[] ps = new float[0];       // [G][groups] p_t * s_tg
        float[] bias = new float[0];     // [groups]
        float[] acc = new float[0];      // [D]

        void ensure(int tokens, int headDim, int groupSize) {
            if (scores.length < tokens) {
                scores = new float[Math.max(tokens, 2 * scores.length)];
            }
            if (qs.length < headDim) {
                qs = new float[headDim];
                acc = new float[headDim];
                bias = new float[headDim];
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
        if (rows.rows() == 1) {
            attendRow(rows, 0, keys, values, q, qOffset, scale, out, outOffset);
        } else {
            IntStream.range(0, rows.rows()).parallel()
                    .forEach(row -> attendRow(rows, row, keys, values, q, qOffset, scale, out, outOffset));
        }
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
                scores[t - first] = dotFp16(q, qBase, run.data(), run.rowOffset(head, t, d), d) * scale;
            }
        }
        PackedLayout kLayout = keys.layout();
        for (StreamView.PackedRun run : keys.packed()) {
            int from = Math.max(first, run.blockStart() + run.from());
            int to = Math.min(last, run.blockStart() + run.to() - 1);
            if (from > to) {
                continue;
            }
            packedKeyScores(run.block(), head * kLayout.bytes(), kLayout, q, qBase, scale, s);
            System.arraycopy(s.blockScores, from - run.blockStart(), scores, from - first, to - from + 1);
        }

        float sum = softmaxInPlace(scores, visible);

        float[] acc = s.acc;
        Arrays.fill(acc, 0, d, 0f);
        for (StreamView.FpRun run : values.fpRuns()) {
            int from = Math.max(first, run.firstToken());
            int to = Math.min(last, run.firstToken() + run.count() - 1);
            for (int t = from; t <= to; t++) {
                axpyFp16(scores[t - first], run.data(), run.rowOffset(head, t, d), acc, d);
            }
        }
        PackedLayout vLayout = values.layout();
        for (StreamView.PackedRun run : values.packed()) {
            int from = Math.max(first, run.blockStart() + run.from());
            int to = Math.min(last, run.blockStart() + run.to() - 1);
            if (from > to) {
                continue;
            }
            int g = vLayout.packLength();
            Arrays.fill(s.weights, 0, g, 0f);
            System.arraycopy(scores, from - first, s.weights, from - run.blockStart(), to - from + 1);
            packedValueAccumulate(run.block(), head * vLayout.bytes(), vLayout, s);
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
        float sum = vsum.reduceLanes(VectorOperators.ADD);
        for (; i < n; i++) {
            scores[i] = (float) Math.exp(scores[i] - max);
            sum += scores[i];
        }
        return sum;
    }

    /** {@code q[qBase ..] . row} for an fp16 row of {@code d} channels. */
    static float dotFp16(float[] q, int qBase, MemorySegment data, long rowOffset, int d) {
        FloatVector acc = FloatVector.zero(F);
        int c = 0;
        for (; c <= d - LANES; c += LANES) {
            acc = Fp16Vectors.load(data, rowOffset + 2L * c).fma(FloatVector.fromArray(F, q, qBase + c), acc);
        }
        float dot = acc.reduceLanes(VectorOperators.ADD);
        for (; c < d; c++) {
            dot += q[qBase + c] * Fp16.get(data, rowOffset + 2L * c);
        }
        return dot;
    }

    /** {@code acc += p * row} for an fp16 row of {@code d} channels. */
    static void axpyFp16(float p, MemorySegment data, long rowOffset, float[] acc, int d) {
        FloatVector vp = FloatVector.broadcast(F, p);
        int c = 0;
        for (; c <= d - LANES; c += LANES) {
            Fp16Vectors.load(data, rowOffset + 2L * c).fma(vp, FloatVector.fromArray(F, acc, c)).intoArray(acc, c);
        }
        for (; c < d; c++) {
            acc[c] += p * Fp16.get(data, rowOffset + 2L * c);
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
        float bias = biasAcc.reduceLanes(VectorOperators.ADD);
        for (; c < d; c++) {
            qs[c] = q[qBase + c] * Fp16.get(block, base + layout.scaleOffset(c, 0));
            bias += q[qBase + c] * Fp16.get(block, base + layout.minOffset(c, 0));
        }
        FloatVector vbias = FloatVector.broadcast(F, bias);
        for (int t0 = 0; t0 < tokens; t0 += LANES) {
            FloatVector acc = FloatVector.zero(F);
            for (int run = 0; run < layout.runs(); run++) {
                for (BitWidth.Plane plane : layout.bits().planes()) {
                    int perWord = plane.codesPerWord();
                    float factor = 1 << plane.shift();
                    for (int sub = 0; sub < plane.wordsPerRun(); sub++) {
                        int firstChannel = run * BitWidth.RUN + sub * perWord;
                        int count = Math.min(perWord, d - firstChannel);
                        if (count <= 0) {
                            break;
                        }
                        IntVector words = IntVector.fromMemorySegment(I, block,
                                base + layout.wordOffset(run, plane.firstWord() + sub, t0), ByteOrder.LITTLE_ENDIAN);
                        acc = accumulateCodes(words, plane, count, qs, firstChannel, 1, factor, acc);
                    }
                }
            }
            acc.add(vbias).mul(scale).intoArray(s.blockScores, t0);
        }
    }

    /**
     * {@code acc += sum_j code_j(words) * weights[start + j * stride] * factor} over the first {@code count}
     * codes of a vector of plane words: the inner loop of both packed kernels.
     */
    private static FloatVector accumulateCodes(IntVector words, BitWidth.Plane plane, int count, float[] weights,
                                               int start, int stride, float factor, FloatVector acc) {
        int width = plane.width();
        int mask = plane.mask();
        for (int j = 0; j < count; j++) {
            FloatVector code = (FloatVector) words.lanewise(VectorOperators.LSHR, width * j).and(mask)
                    .convert(VectorOperators.I2F, 0);
            acc = code.fma(FloatVector.broadcast(F, weights[start + j * stride] * factor), acc);
        }
        return acc;
    }

    /** {@code s.acc[c] += sum_t s.weights[t] * v_tc} over one packed value matrix. */
    static void packedValueAccumulate(MemorySegment block, long base, PackedLayout layout, Scratch s) {
        int d = layout.laneLength();
        int tokens = layout.packLength();
        int groupLength = layout.groupLength();
        int groups = layout.groupsPerPack();
        float[] w = s.weights;
        float[] ps = s.ps;
        float[] bias = s.bias;
        Arrays.fill(bias, 0, groups, 0f);
        for (int t = 0; t < tokens; t++) {
            for (int g = 0; g < groups; g++) {
                ps[t * groups + g] = w[t] * Fp16.get(block, base + layout.scaleOffset(t, g));
                bias[g] += w[t] * Fp16.get(block, base + layout.minOffset(t, g));
            }
        }
        float[] acc = s.acc;
        int vectorEnd = d - d % LANES;
        for (int c0 = 0; c0 < vectorEnd; c0 += LANES) {
            int g = c0 / groupLength;
            FloatVector a = FloatVector.fromArray(F, acc, c0);
            for (int run = 0; run < layout.runs(); run++) {
                for (BitWidth.Plane plane : layout.bits().planes()) {
                    int perWord = plane.codesPerWord();
                    float factor = 1 << plane.shift();
                    for (int sub = 0; sub < plane.wordsPerRun(); sub++) {
                        int firstToken = run * BitWidth.RUN + sub * perWord;
                        int count = Math.min(perWord, tokens - firstToken);
                        IntVector words = IntVector.fromMemorySegment(I, block,
                                base + layout.wordOffset(run, plane.firstWord() + sub, c0), ByteOrder.LITTLE_ENDIAN);
                        a = accumulateCodes(words, plane, count, ps, firstToken * groups + g, groups, factor, a);
                    }
                }
            }
            a.intoArray(acc, c0);
        }
        for (int c = vectorEnd; c < d; c++) {
            int g = c / groupLength;
            for (int t = 0; t < tokens; t++) {
                acc[c] += ps[t * groups + g] * ScalarGroupQuantizer.getCode(block, base, layout, c, t);
            }
        }
        for (int c = 0; c < d; c++) {
            acc[c] += bias[c / groupLength];
        }
    }
}
