package io.kvmix.core.plan;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** The spill arithmetic of FORMAT.md section 4, checked against values worked out by hand. */
class ResidualPolicyTest {
    private static final int G = 32;

    /**
     * ratio r: keep floor(r * n) newest tokens, quantize floor((n - keep) / G) * G oldest.
     * 4096: keep floor(819.2) = 819, (4096 - 819) / 32 = 102.4 -> 102 groups = 3264.
     * 40: keep 8, 32 left = one group. 39: keep floor(7.8) = 7, 32 left = one group.
     * 38: keep 7, 31 left = no whole group. 31: less than a group, nothing.
     */
    @ParameterizedTest(name = "ratio 0.2, fpLength {0} -> {1}")
    @CsvSource({"4096, 3264", "40, 32", "39, 32", "38, 0", "31, 0", "0, 0", "64, 32", "80, 64"})
    void ratioPointTwo(int fpLength, int expected) {
        assertEquals(expected, new ResidualPolicy.Ratio(0.2).tokensToQuantize(fpLength, G));
    }

    /** 0.3 * 4096 = 1228.8 -> keep 1228; 2868 / 32 = 89.6 -> 89 groups = 2848. */
    @Test
    void ratioPointThreeOnALongPrompt() {
        assertEquals(2848, new ResidualPolicy.Ratio(0.3).tokensToQuantize(4096, G));
    }

    @Test
    void ratioZeroQuantizesEveryWholeGroupAndRatioOneNothing() {
        assertEquals(96, new ResidualPolicy.Ratio(0).tokensToQuantize(100, G));
        assertEquals(0, new ResidualPolicy.Ratio(1).tokensToQuantize(4096, G));
    }

    /** window R: quantize floor(max(0, n - R) / G) * G, so R .. R + G - 1 tokens stay FP. */
    @ParameterizedTest(name = "window 128, fpLength {0} -> {1}")
    @CsvSource({"160, 32", "159, 0", "128, 0", "100, 0", "191, 32", "192, 64", "4096, 3968"})
    void window128(int fpLength, int expected) {
        assertEquals(expected, new ResidualPolicy.Window(128).tokensToQuantize(fpLength, G));
    }

    @Test
    void windowWithALargerGroup() {
        assertEquals(64, new ResidualPolicy.Window(128).tokensToQuantize(200, 64));
        assertEquals(0, new ResidualPolicy.Window(128).tokensToQuantize(191, 64));
    }

    @ParameterizedTest(name = "{0} bits -> ratio {1}")
    @CsvSource({"4, 0.3", "3, 0.2", "2, 0.2", "1, 0.1"})
    void referenceRatios(int bits, double ratio) {
        assertEquals(new ResidualPolicy.Ratio(ratio), ResidualPolicy.Ratio.referenceFor(bits));
        assertEquals(ratio, ((ResidualPolicy.Ratio) StreamQuant.reference(bits).policy()).ratio());
    }

    @Test
    void badValuesAreRejectedByName() {
        assertEquals("residual ratio=1.5, must be in [0, 1]",
                assertThrows(IllegalArgumentException.class, () -> new ResidualPolicy.Ratio(1.5)).getMessage());
        assertEquals("residual ratio=NaN, must be in [0, 1]",
                assertThrows(IllegalArgumentException.class, () -> new ResidualPolicy.Ratio(Double.NaN)).getMessage());
        assertEquals("residual window=-1, must be >= 0",
                assertThrows(IllegalArgumentException.class, () -> new ResidualPolicy.Window(-1)).getMessage());
        assertEquals("bits=5, must be 1-4",
                assertThrows(IllegalArgumentException.class, () -> ResidualPolicy.Ratio.referenceFor(5)).getMessage());
    }
}
