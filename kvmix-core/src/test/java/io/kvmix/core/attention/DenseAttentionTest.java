package io.kvmix.core.attention;

import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.cache.LayerKvCache;
import org.junit.jupiter.api.Test;

import java.util.Random;

/** The benchmark baseline computes the same attention as the fused kernel over an fp16 cache of the same rows. */
class DenseAttentionTest {

    @Test
    void matchesOracleOverFp16RoundedInputs() {
        for (int d : new int[]{64, 128, 72}) {
            Random random = new Random(d);
            int kvHeads = 2;
            int qHeads = 4;
            int tokens = 203;
            float[] rowsK = FusedAttentionTest.gaussian(random, tokens * kvHeads * d, 1f);
            float[] rowsV = FusedAttentionTest.gaussian(random, tokens * kvHeads * d, 1f);
            for (int i = 0; i < rowsK.length; i++) {
                rowsK[i] = io.kvmix.core.quant.Fp16.round(rowsK[i]);
                rowsV[i] = io.kvmix.core.quant.Fp16.round(rowsV[i]);
            }
            // dense layout [kvHeads][tokens][d]
            float[] keys = new float[rowsK.length];
            float[] values = new float[rowsV.length];
            for (int t = 0; t < tokens; t++) {
                for (int h = 0; h < kvHeads; h++) {
                    System.arraycopy(rowsK, (t * kvHeads + h) * d, keys, (h * tokens + t) * d, d);
                    System.arraycopy(rowsV, (t * kvHeads + h) * d, values, (h * tokens + t) * d, d);
                }
            }
            float[] q = FusedAttentionTest.gaussian(random, qHeads * d, 1f);
            float scale = (float) (1 / Math.sqrt(d));
            float[] dense = new float[q.length];
            DenseAttention.decode(q, keys, values, tokens, qHeads, kvHeads, d, scale, dense);
            try (LayerKvCache cache = LayerKvCache.fullPrecision(new KvGeometry(kvHeads, d, tokens, 0), 0)) {
                cache.append(rowsK, 0, rowsV, 0, tokens);
                float[] expected = FusedAttentionTest.oracle(cache, rowsK, rowsV, q, 1, qHeads, scale,
                        io.kvmix.core.cache.FpPrecision.FP16);
                FusedAttentionTest.assertClose(expected, dense, "dense d=" + d);
            }
        }
    }
}
