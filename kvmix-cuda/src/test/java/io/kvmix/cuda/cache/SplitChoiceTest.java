package io.kvmix.cuda.cache;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The attention's split length model (runs everywhere, no GPU). */
class SplitChoiceTest {

    @Test
    void batchOfEightFillsTwoFullWaves() {
        // 8 x 32 (sequence, head) pairs over 4096 tokens, 132 SMs holding 5 CTAs each (660 at once):
        // 5 splits of 26 units make 1280 CTAs, just under two waves
        assertEquals(26, DeviceBatchKvCache.chooseSplitUnits(128, 0, 256, 132, units -> 5));
    }

    @Test
    void oneLongSequenceUsesOneWaveOfLongSplits() {
        // 1 x 32 pairs over 32768 tokens: 20 splits of 52 units = 640 CTAs, one wave
        assertEquals(52, DeviceBatchKvCache.chooseSplitUnits(1024, 0, 32, 132, units -> 5));
    }

    @Test
    void fpWindowSplitsCountInTheWaves() {
        // 8 x 32 pairs, 122 packed + 6 FP units, 12 CTAs per SM (1584 at once): the FP splits (a third as long)
        // are counted, so the plan still fits one wave
        int chosen = DeviceBatchKvCache.chooseSplitUnits(122, 6, 256, 132, units -> 12);
        DeviceBatchKvCache.SplitPlan plan = DeviceBatchKvCache.SplitPlan.of(122, 6, chosen);
        assertTrue(256L * plan.splits() <= 132 * 12, chosen + " units: " + plan);
        assertEquals((chosen + 2) / 3, plan.fpSplitUnits());
        assertTrue(plan.packedSplits() * chosen >= 122 && (plan.packedSplits() - 1) * chosen < 122, plan.toString());
    }

    @Test
    void shortContextsTakeOneSplit() {
        assertEquals(3, DeviceBatchKvCache.chooseSplitUnits(3, 0, 4, 132, units -> 8));
    }

    @Test
    void choiceStaysWithinTheKernelsLimits() {
        for (int units = 1; units <= 2048; units += 37) {
            int chosen = DeviceBatchKvCache.chooseSplitUnits(units, units % 7, 64, 132, u -> 6);
            assertTrue(chosen >= 1 && chosen <= 64, "units " + units + ": " + chosen);
        }
    }
}
