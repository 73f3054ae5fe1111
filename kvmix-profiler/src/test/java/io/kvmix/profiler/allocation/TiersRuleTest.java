package io.kvmix.profiler.allocation;

import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.core.plan.ResidualPolicy;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class TiersRuleTest {
    private static final int GROUP_SIZE = 32;
    private static final int HEAD_DIM = 128;

    static int[] keyWidths(QuantPlan plan) {
        return plan.layers().stream().mapToInt(layer -> layer.keys().bits().bits()).toArray();
    }

    static int[] valueWidths(QuantPlan plan) {
        return plan.layers().stream().mapToInt(layer -> layer.values().bits().bits()).toArray();
    }

    /** {@code count} widths of {@code rest}, except {@code width} at the given layers. */
    private static int[] widths(int count, int rest, int width, int... layers) {
        int[] widths = new int[count];
        Arrays.fill(widths, rest);
        for (int layer : layers) {
            widths[layer] = width;
        }
        return widths;
    }

    /** Small distinct scores 0.001 .. 0.001 * L, with {@code high[i]} at layer {@code layers[i]}. */
    private static double[] scores(int count, int[] layers, double[] high) {
        double[] scores = new double[count];
        for (int i = 0; i < count; i++) {
            scores[i] = 0.001 * (i + 1);
        }
        for (int i = 0; i < layers.length; i++) {
            scores[layers[i]] = high[i];
        }
        return scores;
    }

    private static Allocation reference(LayerImportance importance) {
        return TiersRule.reference().allocate(importance, GROUP_SIZE, HEAD_DIM, "test/model");
    }

    @Test
    void twelveLayersOneImportantOneGeneralKeysAndValuesRankedIndependently() {
        LayerImportance importance = new LayerImportance(
                new double[] {0.50, 0.90, 0.10, 0.30, 0.70, 0.20, 0.05, 0.60, 0.80, 0.40, 0.15, 0.25},
                new double[] {0.95, 0.10, 0.20, 0.85, 0.30, 0.40, 0.50, 0.05, 0.15, 0.25, 0.35, 0.45});
        Allocation allocation = reference(importance);
        assertArrayEquals(widths(12, 2, 3, 1, 8), keyWidths(allocation.plan()));
        assertArrayEquals(widths(12, 2, 4, 0, 3), valueWidths(allocation.plan()));
        assertEquals(List.of(), allocation.notes());
    }

    @Test
    void thirtyTwoLayersThreeImportantThreeGeneral() {
        LayerImportance importance = new LayerImportance(
                scores(32, new int[] {5, 17, 30, 2, 11, 25}, new double[] {1.0, 0.9, 0.8, 0.5, 0.4, 0.3}),
                scores(32, new int[] {0, 31, 16, 8, 9, 3}, new double[] {2.0, 1.5, 1.2, 1.1, 1.05, 1.01}));
        QuantPlan plan = reference(importance).plan();
        assertArrayEquals(widths(32, 2, 3, 5, 17, 30, 2, 11, 25), keyWidths(plan));
        assertArrayEquals(widths(32, 2, 4, 0, 31, 16, 8, 9, 3), valueWidths(plan));
        assertEquals(2.1875, plan.averageKeyBits());
        assertEquals(2.375, plan.averageValueBits());
    }

    @Test
    void customBitsSeparateTheImportantFromTheGeneralTier() {
        TiersRule rule = new TiersRule(0.1, 0.1, new TierBits(4, 3, 1), new TierBits(4, 2, 1));
        LayerImportance importance = new LayerImportance(
                scores(32, new int[] {5, 17, 30, 2, 11, 25}, new double[] {1.0, 0.9, 0.8, 0.5, 0.4, 0.3}),
                scores(32, new int[] {0, 31, 16, 8, 9, 3}, new double[] {2.0, 1.5, 1.2, 1.1, 1.05, 1.01}));
        QuantPlan plan = rule.allocate(importance, GROUP_SIZE, HEAD_DIM, null).plan();
        int[] keys = widths(32, 1, 4, 5, 17, 30);
        for (int layer : new int[] {2, 11, 25}) {
            keys[layer] = 3;
        }
        int[] values = widths(32, 1, 4, 0, 31, 16);
        for (int layer : new int[] {8, 9, 3}) {
            values[layer] = 2;
        }
        assertArrayEquals(keys, keyWidths(plan));
        assertArrayEquals(values, valueWidths(plan));
    }

    @Test
    void tenLayersIsTheSmallestModelTheReferenceUpgrades() {
        LayerImportance importance = new LayerImportance(
                new double[] {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0},
                new double[] {1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1});
        Allocation allocation = reference(importance);
        assertArrayEquals(widths(10, 2, 3, 9, 8), keyWidths(allocation.plan()));
        assertArrayEquals(widths(10, 2, 4, 0, 1), valueWidths(allocation.plan()));
        assertEquals(List.of(), allocation.notes());
    }

    @Test
    void fewerThanTenLayersUpgradeNothingAndSaySo() {
        for (int layers : new int[] {1, 9}) {
            double[] scores = scores(layers, new int[0], new double[0]);
            Allocation allocation = reference(new LayerImportance(scores, scores));
            assertArrayEquals(widths(layers, 2, 2), keyWidths(allocation.plan()));
            assertArrayEquals(widths(layers, 2, 2), valueWidths(allocation.plan()));
            assertEquals(1, allocation.notes().size());
            String note = allocation.notes().getFirst();
            assertTrue(note.startsWith(layers + " layers: (int) (0.1 * " + layers + ") = 0 important"), note);
            assertTrue(note.contains("K2/V2"), note);
        }
    }

    @Test
    void tiedScoresGoToTheLowerLayerFirst() {
        double[] tied = new double[12];
        Arrays.fill(tied, 0.5);
        TiersRule rule = new TiersRule(0.1, 0.1, new TierBits(4, 3, 2), new TierBits(4, 3, 1));
        QuantPlan plan = rule.allocate(new LayerImportance(tied, tied), GROUP_SIZE, HEAD_DIM, null).plan();
        int[] keys = widths(12, 2, 4, 0);
        keys[1] = 3;
        int[] values = widths(12, 1, 4, 0);
        values[1] = 3;
        assertArrayEquals(keys, keyWidths(plan));
        assertArrayEquals(values, valueWidths(plan));
    }

    @Test
    void everyStreamGetsTheReferenceRatioOfItsWidthAndNoSinks() {
        TiersRule rule = new TiersRule(0.25, 0.25, new TierBits(4, 3, 1), new TierBits(3, 2, 4));
        LayerImportance importance = new LayerImportance(
                new double[] {0.8, 0.6, 0.4, 0.2, 0.1, 0.05, 0.02, 0.01},
                new double[] {0.8, 0.6, 0.4, 0.2, 0.1, 0.05, 0.02, 0.01});
        QuantPlan plan = rule.allocate(importance, GROUP_SIZE, HEAD_DIM, null).plan();
        assertArrayEquals(new int[] {4, 4, 3, 3, 1, 1, 1, 1}, keyWidths(plan));
        assertArrayEquals(new int[] {3, 3, 2, 2, 4, 4, 4, 4}, valueWidths(plan));
        for (LayerQuant layer : plan.layers()) {
            assertEquals(ResidualPolicy.Ratio.referenceFor(layer.keys().bits().bits()), layer.keys().policy());
            assertEquals(ResidualPolicy.Ratio.referenceFor(layer.values().bits().bits()), layer.values().policy());
            assertEquals(0, layer.sinks());
        }
        assertEquals(new ResidualPolicy.Ratio(0.3), plan.layer(0).keys().policy());
        assertEquals(new ResidualPolicy.Ratio(0.2), plan.layer(2).keys().policy());
        assertEquals(new ResidualPolicy.Ratio(0.1), plan.layer(7).keys().policy());
        assertEquals(new ResidualPolicy.Ratio(0.2), plan.layer(3).values().policy());
    }

    @Test
    void planRecordsRuleParamsImportanceModelAndGroupSize() {
        LayerImportance importance = new LayerImportance(new double[] {0.2, 0.1}, new double[] {0.3, 0.4});
        QuantPlan plan = TiersRule.reference().allocate(importance, 64, HEAD_DIM, "tiny/llama").plan();
        Map<String, Object> params = new LinkedHashMap<>();
        params.put("important_fraction", 0.1);
        params.put("general_fraction", 0.1);
        params.put("k_bits_important", 3L);
        params.put("k_bits_general", 3L);
        params.put("k_bits_rest", 2L);
        params.put("v_bits_important", 4L);
        params.put("v_bits_general", 4L);
        params.put("v_bits_rest", 2L);
        assertEquals(params, TiersRule.reference().params());
        assertEquals(List.copyOf(params.keySet()), List.copyOf(plan.ruleParams().keySet()));
        assertEquals(params, plan.ruleParams());
        assertEquals("tiers", plan.rule());
        assertEquals("tiny/llama", plan.model());
        assertEquals(64, plan.groupSize());
        assertArrayEquals(importance.keys(), plan.keyImportance());
        assertArrayEquals(importance.values(), plan.valueImportance());
    }

    @Test
    void tierCountsTruncateLikeTheReference() {
        TiersRule rule = TiersRule.reference();
        assertEquals(0, rule.importantCount(9));
        assertEquals(1, rule.importantCount(10));
        assertEquals(1, rule.generalCount(19));
        assertEquals(3, rule.importantCount(32));
        assertEquals(8, rule.generalCount(80));
        assertEquals(1, new TiersRule(0.5, 0.5, new TierBits(4, 3, 2), new TierBits(4, 3, 2)).generalCount(3));
    }

    @Test
    void rejectsBadFractionsAndWidthsNamingTheField() {
        TierBits bits = new TierBits(3, 3, 2);
        assertMessage("importantFraction=-0.1, must be in [0, 1]", () -> new TiersRule(-0.1, 0.1, bits, bits));
        assertMessage("generalFraction=NaN, must be in [0, 1]", () -> new TiersRule(0.1, Double.NaN, bits, bits));
        assertMessage("importantFraction=0.6 + generalFraction=0.5 exceeds 1", () -> new TiersRule(0.6, 0.5, bits, bits));
        assertMessage("TierBits.important=5, must be 1-4", () -> new TierBits(5, 3, 2));
        assertMessage("TierBits.rest=0, must be 1-4", () -> new TierBits(3, 3, 0));
    }

    private static void assertMessage(String expected, Runnable construction) {
        assertEquals(expected, assertThrows(IllegalArgumentException.class, construction::run).getMessage());
    }
}
