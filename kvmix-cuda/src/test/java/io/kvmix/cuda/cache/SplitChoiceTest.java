package io.kvmix.cuda.cache;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The attention's split length model and kernel choice (run everywhere, no GPU). */
class SplitChoiceTest {

    @Test
    void batchOfEightFillsTwoFullWaves() {
        // 8 x 32 (sequence, head) pairs over 4096 tokens, 132 SMs holding 5 CTAs each (660 at once):
        // 5 splits of 26 units make 1280 CTAs, just under two waves
        assertEquals(26, DeviceBatchKvCache.chooseSplitUnits(128, 256, 132, units -> 5));
    }

    @Test
    void oneLongSequenceUsesOneWaveOfLongSplits() {
        // 1 x 32 pairs over 32768 tokens: 20 splits of 52 units = 640 CTAs, one wave
        assertEquals(52, DeviceBatchKvCache.chooseSplitUnits(1024, 32, 132, units -> 5));
    }

    @Test
    void shortContextsTakeOneSplit() {
        assertEquals(3, DeviceBatchKvCache.chooseSplitUnits(3, 4, 132, units -> 8));
    }

    @Test
    void queryGroupsRunOnTheSmallestKernelThatHoldsThemOrInTilesOfEight() {
        int[] groups = {1, 2, 3, 4, 5, 6, 7, 8, 12, 16};
        int[] kernels = {1, 2, 4, 4, 8, 8, 8, 8, 8, 8};
        for (int i = 0; i < groups.length; i++) {
            assertEquals(kernels[i], DeviceBatchKvCache.kernelGroup(groups[i]), "group " + groups[i]);
        }
    }

    @Test
    void choiceStaysWithinTheKernelsLimits() {
        for (int units = 1; units <= 2048; units += 37) {
            int chosen = DeviceBatchKvCache.chooseSplitUnits(units, 64, 132, u -> 6);
            assertTrue(chosen >= 1 && chosen <= 64, "units " + units + ": " + chosen);
        }
    }
}
