package io.kvmix.core.cache;

import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.plan.ResidualPolicy;
import io.kvmix.core.plan.StreamQuant;
import io.kvmix.core.quant.BitWidth;
import io.kvmix.core.quant.Fp16;
import io.kvmix.core.quant.QuantizationException;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LayerKvCacheTest {
    static final int H = 2;
    static final int D = 64;

    static float[] rows(Random random, int tokens) {
        float[] x = new float[tokens * H * D];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) random.nextGaussian();
        }
        return x;
    }

    static void append(LayerKvCache cache, Random random, int tokens) {
        cache.append(rows(random, tokens), 0, rows(random, tokens), 0, tokens);
    }

    @Test
    void ratioPolicyFpLengthsMatchHandComputedValues() {
        // keys: 2 bits, ratio 0.2; values: 4 bits, ratio 0.3; G = 32.
        LayerQuant quant = LayerQuant.reference(2, 4);
        try (LayerKvCache cache = LayerKvCache.quantized(new KvGeometry(H, D, 4096, 0), 0, quant, 32)) {
            Random random = new Random(1);
            append(cache, random, 1000);
            // keys: n_fp 1000, keep 200, quantize floor(800/32)*32 = 800 -> 200 left
            // values: keep 300, quantize floor(700/32)*32 = 672 -> 328 left
            assertEquals(200, cache.keyFpLength());
            assertEquals(328, cache.valueFpLength());
            int[] expectedK = new int[20];
            int[] expectedV = new int[20];
            int k = 200;
            int v = 328;
            for (int step = 0; step < 20; step++) {
                // by hand: keys 201 -> keep 40, quantize floor(161/32)*32 = 160 -> 41; then 42, 43, ...
                k++;
                k -= (k - (int) Math.floor(0.2 * k)) / 32 * 32;
                v++;
                v -= (v - (int) Math.floor(0.3 * v)) / 32 * 32;
                expectedK[step] = k;
                expectedV[step] = v;
            }
            assertEquals(41, expectedK[0]);
            assertEquals(105, expectedV[0]); // 329: keep 98, floor(231/32)*32 = 224 -> 105
            for (int step = 0; step < 20; step++) {
                append(cache, random, 1);
                assertEquals(expectedK[step], cache.keyFpLength(), "keys after decode step " + step);
                assertEquals(expectedV[step], cache.valueFpLength(), "values after decode step " + step);
            }
        }
    }

    @Test
    void ratioPolicyDecodeSequenceSpelledOut() {
        // keys 2 bits ratio 0.2, G 32: prefill 100 -> keep 20, quantize 64 -> 36.
        // decode: 37 (keep 7, 30 < 32), 38 (keep 7, 31), 39 (keep 7, 32 -> quantize 32) -> 7, 8, 9, ...
        try (LayerKvCache cache = LayerKvCache.quantized(new KvGeometry(H, D, 4096, 0), 0,
                LayerQuant.reference(2, 2), 32)) {
            Random random = new Random(2);
            append(cache, random, 100);
            assertEquals(36, cache.keyFpLength());
            int[] expected = {37, 38, 7, 8, 9, 10};
            for (int e : expected) {
                append(cache, random, 1);
                assertEquals(e, cache.keyFpLength());
            }
        }
    }

    @Test
    void windowPolicyKeepsRToRPlusGMinusOne() {
        StreamQuant window = new StreamQuant(BitWidth.TWO, new ResidualPolicy.Window(128));
        try (LayerKvCache cache = LayerKvCache.quantized(new KvGeometry(H, D, 4096, 0), 0,
                new LayerQuant(window, window, 0), 32)) {
            Random random = new Random(3);
            append(cache, random, 1000); // 1000 - 128 = 872 -> quantize 864 -> 136 left
            assertEquals(136, cache.keyFpLength());
            for (int step = 0; step < 100; step++) {
                append(cache, random, 1);
                assertTrue(cache.keyFpLength() >= 128 && cache.keyFpLength() <= 128 + 31, "" + cache.keyFpLength());
            }
        }
    }

    @Test
    void byteAccountingIsExact() {
        LayerQuant quant = new LayerQuant(StreamQuant.reference(3), StreamQuant.reference(4), 4);
        try (LayerKvCache cache = LayerKvCache.quantized(new KvGeometry(H, D, 4096, 0), 0, quant, 32)) {
            append(cache, new Random(4), 500);
            // sinks 4; keys: n_fp 496, keep 99, quantize floor(397/32)*32 = 384 -> 12 blocks, 112 FP
            assertEquals(112, cache.keyFpLength());
            long keyCodes = 12L * H * (4 * 2 * 3 * 32);       // runs(64)=2, 3 words per run per lane, 32 lanes
            long keyMeta = 12L * H * (4 * 64);                // one (scale, min) per channel
            long keyFp = (4 + 112) * H * D * 2L;
            assertEquals(new KvBytes(keyCodes, keyMeta, keyFp), cache.keyBytes());
            // values: n_fp 496, keep 148, quantize floor(348/32)*32 = 320 -> 10 blocks, 176 FP
            assertEquals(176, cache.valueFpLength());
            long valueCodes = 10L * H * (4 * 1 * 4 * 64);     // runs(32 tokens)=1, 4 words, 64 lanes
            long valueMeta = 10L * H * (4 * 32 * 2);          // 32 tokens x 2 groups of 32 channels
            long valueFp = (4 + 176) * H * D * 2L;
            assertEquals(new KvBytes(valueCodes, valueMeta, valueFp), cache.valueBytes());
            assertEquals(cache.keyBytes().plus(cache.valueBytes()), cache.bytes());
        }
    }

    @Test
    void fullPrecisionCacheStoresFp16Exactly() {
        try (LayerKvCache cache = LayerKvCache.fullPrecision(new KvGeometry(H, D, 1000, 0), 0)) {
            Random random = new Random(5);
            float[] k = rows(random, 300);
            float[] v = rows(random, 300);
            cache.append(k, 0, v, 0, 300);
            assertEquals(new KvBytes(0, 0, 300L * H * D * 2 * 2), cache.bytes());
            for (int t = 0; t < 300; t += 7) {
                for (int h = 0; h < H; h++) {
                    for (int c = 0; c < D; c += 5) {
                        assertEquals(Fp16.round(k[(t * H + h) * D + c]), cache.storedKey(t, h, c));
                        assertEquals(Fp16.round(v[(t * H + h) * D + c]), cache.storedValue(t, h, c));
                    }
                }
            }
        }
    }

    @Test
    void appendIsAmortizedConstantAndNeverMovesHistory() {
        // Packed and FP storage stay where they are: a decoded old token is the same after many appends.
        try (LayerKvCache cache = LayerKvCache.quantized(new KvGeometry(H, D, 20_000, 0), 0,
                LayerQuant.reference(2, 2), 32)) {
            Random random = new Random(6);
            append(cache, random, 256);
            float before = cache.storedKey(10, 1, 3);
            for (int i = 0; i < 5000; i++) {
                append(cache, random, 1);
            }
            assertEquals(before, cache.storedKey(10, 1, 3));
            assertEquals(5256, cache.length());
        }
    }

    @Test
    void capacityErrorSaysWhatWasExceededAndKeepsTheCache() {
        try (LayerKvCache cache = LayerKvCache.quantized(new KvGeometry(H, D, 100, 0), 7, LayerQuant.reference(2, 2), 32)) {
            append(cache, new Random(7), 90);
            KvBytes before = cache.bytes();
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> append(cache, new Random(8), 11));
            assertEquals("layer 7: appending 11 tokens to 90 exceeds the cache capacity of 100 tokens", e.getMessage());
            assertEquals(90, cache.length());
            assertEquals(before, cache.bytes());
            append(cache, new Random(9), 10);
            assertEquals(100, cache.length());
        }
    }

    @Test
    void nonFiniteInputIsRejectedBeforeAnythingIsStored() {
        try (LayerKvCache cache = LayerKvCache.quantized(new KvGeometry(H, D, 100, 0), 2, LayerQuant.reference(2, 2), 32)) {
            append(cache, new Random(10), 5);
            float[] k = rows(new Random(11), 3);
            float[] v = rows(new Random(12), 3);
            v[(2 * H + 1) * D + 9] = Float.NaN;  // token 2 of the step, head 1, channel 9
            QuantizationException e = assertThrows(QuantizationException.class, () -> cache.append(k, 0, v, 0, 3));
            assertEquals("layer 2 values, kv-head 1, token 7, channel 9: value NaN is not finite in fp16 (|x| must be < 65520)",
                    e.getMessage());
            k[0] = 70000f; // finite in fp32, infinite in fp16
            assertThrows(QuantizationException.class, () -> cache.append(k, 0, rows(new Random(1), 3), 0, 3));
            assertEquals(5, cache.length());
            assertEquals(5, cache.keyFpLength());
        }
    }

    @Test
    void slidingWindowFreesBlocksNoQueryCanSee() {
        int window = 100;
        try (LayerKvCache windowed = LayerKvCache.quantized(new KvGeometry(H, D, 10_000, window), 0,
                LayerQuant.reference(2, 2), 32);
             LayerKvCache unbounded = LayerKvCache.quantized(new KvGeometry(H, D, 10_000, 0), 0,
                     LayerQuant.reference(2, 2), 32)) {
            Random a = new Random(13);
            Random b = new Random(13);
            append(windowed, a, 64);
            append(unbounded, b, 64);
            for (int i = 0; i < 4000; i++) {
                append(windowed, a, 1);
                append(unbounded, b, 1);
            }
            assertTrue(windowed.bytes().codes() < unbounded.bytes().codes() / 4,
                    windowed.bytes() + " vs " + unbounded.bytes());
            int last = windowed.length() - 1;
            for (int t = last - window + 1; t <= last; t++) {
                assertEquals(unbounded.storedKey(t, 1, 3), windowed.storedKey(t, 1, 3)); // visible tokens are kept
            }
            assertThrows(IllegalStateException.class, () -> windowed.storedKey(0, 0, 0));
            // Pages are freed whole: at most the window, a partial group either side and one page stay packed.
            long blockKeyBytes = (long) H * (4 * 2 * 2 * 32 + 4 * 64);
            assertTrue(windowed.keyBytes().codes() + windowed.keyBytes().metadata()
                    <= blockKeyBytes * (window / 32 + 2 + PackedPages.BLOCKS_PER_PAGE));
        }
    }
}
