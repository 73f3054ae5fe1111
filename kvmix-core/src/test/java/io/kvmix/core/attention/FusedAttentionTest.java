package io.kvmix.core.attention;

import io.kvmix.core.cache.FpPrecision;
import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.cache.LayerKvCache;
import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.plan.ResidualPolicy;
import io.kvmix.core.plan.StreamQuant;
import io.kvmix.core.quant.BitWidth;
import io.kvmix.core.quant.Fp16;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Both fused kernels against the oracle "decode every stored element, then plain fp32 attention"
 * (the last step's own tokens at fp16, as the cache contract says).
 */
class FusedAttentionTest {

    record Case(String name, int kBits, int vBits, int kvHeads, int qHeads, int headDim, int group, int window,
                int sinks, boolean residualWindow) {
        @Override
        public String toString() {
            return name;
        }
    }

    static Stream<Arguments> cases() {
        List<Arguments> all = new ArrayList<>();
        for (int bits = 1; bits <= 4; bits++) {
            all.add(Arguments.of(new Case("K" + bits + "V" + bits + " MHA", bits, bits, 2, 2, 64, 32, 0, 0, false)));
            all.add(Arguments.of(new Case("K" + bits + "V" + bits + " GQA 4/2", bits, bits, 2, 8, 64, 32, 0, 0, false)));
        }
        all.add(Arguments.of(new Case("K3V4 sliding window 50", 3, 4, 2, 4, 64, 32, 50, 0, false)));
        all.add(Arguments.of(new Case("K2V2 sliding window 100 + sinks", 2, 2, 1, 3, 64, 32, 100, 4, false)));
        all.add(Arguments.of(new Case("K2V4 G64 D128", 2, 4, 2, 4, 128, 64, 0, 0, false)));
        all.add(Arguments.of(new Case("K4V2 G128 D64 (one value group per head)", 4, 2, 2, 2, 64, 128, 0, 0, false)));
        all.add(Arguments.of(new Case("K2V3 D80 G128 window(40)", 2, 3, 2, 4, 80, 128, 0, 0, true)));
        all.add(Arguments.of(new Case("K1V2 sinks 8", 1, 2, 2, 4, 64, 32, 0, 8, false)));
        all.add(Arguments.of(new Case("fp16 cache", 0, 0, 2, 4, 64, 32, 0, 0, false)));
        all.add(Arguments.of(new Case("fp16 cache sliding window 70", 0, 0, 2, 4, 64, 32, 70, 0, false)));
        all.add(Arguments.of(new Case("fp32 cache", -1, -1, 2, 4, 72, 32, 0, 0, false)));
        return all.stream();
    }

    static LayerKvCache cacheFor(Case c, int maxTokens) {
        KvGeometry geometry = new KvGeometry(c.kvHeads, c.headDim, maxTokens, c.window);
        if (c.kBits <= 0) {
            return LayerKvCache.fullPrecision(geometry, 0, c.kBits == 0 ? FpPrecision.FP16 : FpPrecision.FP32);
        }
        ResidualPolicy kPolicy = c.residualWindow ? new ResidualPolicy.Window(40) : ResidualPolicy.Ratio.referenceFor(c.kBits);
        ResidualPolicy vPolicy = c.residualWindow ? new ResidualPolicy.Window(40) : ResidualPolicy.Ratio.referenceFor(c.vBits);
        return LayerKvCache.quantized(geometry, 0, new LayerQuant(new StreamQuant(BitWidth.of(c.kBits), kPolicy),
                new StreamQuant(BitWidth.of(c.vBits), vPolicy), c.sinks), c.group);
    }

    static float[] gaussian(Random random, int n, float scale) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) random.nextGaussian() * scale;
        }
        return x;
    }

    /** {@code x} as a full-precision row of the cache holds it. */
    static float stored(float x, FpPrecision precision) {
        return precision == FpPrecision.FP16 ? Fp16.round(x) : x;
    }

    /** Plain attention in double over decoded elements; the last step's own tokens at {@code precision}. */
    static float[] oracle(LayerKvCache cache, float[] stepK, float[] stepV, float[] q, int queries, int qHeads,
                          float scale, FpPrecision precision) {
        int h = cache.geometry().kvHeads();
        int d = cache.geometry().headDim();
        int length = cache.length();
        int stepStart = length - cache.lastAppended();
        int window = cache.geometry().slidingWindow();
        float[] out = new float[queries * qHeads * d];
        for (int i = 0; i < queries; i++) {
            int last = length - queries + i;
            int first = window > 0 ? Math.max(0, last - window + 1) : 0;
            for (int qh = 0; qh < qHeads; qh++) {
                int head = qh / (qHeads / h);
                double[] p = new double[last - first + 1];
                double max = Double.NEGATIVE_INFINITY;
                for (int t = first; t <= last; t++) {
                    double dot = 0;
                    for (int c = 0; c < d; c++) {
                        float k = t >= stepStart ? stored(stepK[((t - stepStart) * h + head) * d + c], precision)
                                : cache.storedKey(t, head, c);
                        dot += (double) q[(i * qHeads + qh) * d + c] * k;
                    }
                    p[t - first] = dot * scale;
                    max = Math.max(max, p[t - first]);
                }
                double sum = 0;
                for (int t = 0; t < p.length; t++) {
                    p[t] = Math.exp(p[t] - max);
                    sum += p[t];
                }
                for (int c = 0; c < d; c++) {
                    double acc = 0;
                    for (int t = first; t <= last; t++) {
                        float v = t >= stepStart ? stored(stepV[((t - stepStart) * h + head) * d + c], precision)
                                : cache.storedValue(t, head, c);
                        acc += p[t - first] * v;
                    }
                    out[(i * qHeads + qh) * d + c] = (float) (acc / sum);
                }
            }
        }
        return out;
    }

    static void assertClose(float[] expected, float[] actual, String what) {
        double maxAbs = 0;
        double maxErr = 0;
        for (int i = 0; i < expected.length; i++) {
            maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
            maxErr = Math.max(maxErr, Math.abs(expected[i] - actual[i]));
        }
        assertTrue(maxErr <= 1e-5 * Math.max(1, maxAbs), what + ": max error " + maxErr + " (max |out| " + maxAbs + ")");
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void kernelsMatchDequantizedOracle(Case c) {
        Random random = new Random(c.name.hashCode());
        int rowWidth = c.kvHeads * c.headDim;
        float scale = (float) (1 / Math.sqrt(c.headDim));
        int[] steps = {150, 1, 1, 1, 40, 1, 7, 1, 1, 1, 1, 1, 1, 30, 1};
        try (LayerKvCache cache = cacheFor(c, 1000)) {
            for (int step : steps) {
                float[] k = gaussian(random, step * rowWidth, 1.5f);
                float[] v = gaussian(random, step * rowWidth, 1f);
                for (int i = 0; i < k.length; i += 17) {
                    k[i] += 6f; // outlier channels, as real keys have
                }
                cache.append(k, 0, v, 0, step);
                int queries = Math.min(step, 9);
                float[] q = gaussian(random, queries * c.qHeads * c.headDim, 1f);
                float[] expected = oracle(cache, k, v, q, queries, c.qHeads, scale,
                        c.kBits < 0 ? FpPrecision.FP32 : FpPrecision.FP16);
                float[] scalar = new float[expected.length];
                float[] vector = new float[expected.length + 5];
                FusedAttention.scalar().attend(cache, q, 0, queries, c.qHeads, scale, scalar, 0);
                FusedAttention.vector().attend(cache, q, 0, queries, c.qHeads, scale, vector, 5);
                assertClose(expected, scalar, "scalar at length " + cache.length());
                assertClose(expected, java.util.Arrays.copyOfRange(vector, 5, vector.length), "vector at length " + cache.length());
            }
        }
    }

    @Test
    void quantizedCacheChangesTheResultButPrefillDoesNot() {
        // Prefill attends over its own FP tokens: identical to the fp16 cache. Decode then sees packed history.
        Random random = new Random(99);
        int h = 2;
        int d = 64;
        float scale = 0.125f;
        try (LayerKvCache fp = LayerKvCache.fullPrecision(new KvGeometry(h, d, 500, 0), 0);
             LayerKvCache q2 = LayerKvCache.quantized(new KvGeometry(h, d, 500, 0), 0, LayerQuant.reference(2, 2), 32)) {
            float[] k = gaussian(random, 200 * h * d, 1f);
            float[] v = gaussian(random, 200 * h * d, 1f);
            fp.append(k, 0, v, 0, 200);
            q2.append(k, 0, v, 0, 200);
            float[] q = gaussian(random, 4 * h * d, 1f);
            float[] a = new float[q.length];
            float[] b = new float[q.length];
            FusedAttention.vector().attend(fp, q, 0, 1, 4 * h, scale, a, 0);
            FusedAttention.vector().attend(q2, q, 0, 1, 4 * h, scale, b, 0);
            assertClose(a, b, "prefill");
            float[] k1 = gaussian(random, h * d, 1f);
            float[] v1 = gaussian(random, h * d, 1f);
            fp.append(k1, 0, v1, 0, 1);
            q2.append(k1, 0, v1, 0, 1);
            FusedAttention.vector().attend(fp, q, 0, 1, 4 * h, scale, a, 0);
            FusedAttention.vector().attend(q2, q, 0, 1, 4 * h, scale, b, 0);
            double diff = 0;
            for (int i = 0; i < a.length; i++) {
                diff = Math.max(diff, Math.abs(a[i] - b[i]));
            }
            assertTrue(diff > 1e-3, "decode over a 2-bit cache should differ from fp16, diff " + diff);
        }
    }

    @Test
    void badCallsAreRejectedByName() {
        try (LayerKvCache cache = LayerKvCache.fullPrecision(new KvGeometry(2, 64, 100, 0), 4)) {
            cache.append(new float[3 * 128], 0, new float[3 * 128], 0, 3);
            float[] q = new float[3 * 4 * 64];
            float[] out = new float[q.length];
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> FusedAttention.vector().attend(cache, q, 0, 1, 3, 0.1f, out, 0));
            assertTrue(e.getMessage().contains("layer 4 attention: 3 query heads is not a multiple of 2 KV heads"));
            e = assertThrows(IllegalArgumentException.class,
                    () -> FusedAttention.vector().attend(cache, q, 0, 4, 4, 0.1f, out, 0));
            assertTrue(e.getMessage().contains("4 queries, but the last append added 3 tokens"), e.getMessage());
        }
    }
}
