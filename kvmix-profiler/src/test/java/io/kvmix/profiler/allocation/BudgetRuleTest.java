package io.kvmix.profiler.allocation;

import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.plan.PlanValidationException;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.core.plan.ResidualPolicy;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static io.kvmix.profiler.allocation.TiersRuleTest.keyWidths;
import static io.kvmix.profiler.allocation.TiersRuleTest.valueWidths;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class BudgetRuleTest {
    private static final int HEAD_DIM = 128;

    /** Keys: layer 7 most important, then 2, then 11, ...; values: the reverse layer order. */
    private static final LayerImportance TWELVE_LAYERS = new LayerImportance(
            new double[] {0.30, 0.20, 0.90, 0.10, 0.25, 0.15, 0.05, 0.95, 0.35, 0.40, 0.45, 0.80},
            new double[] {0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.11, 0.12});

    private static BudgetRule codesOnly(double keyBits, double valueBits) {
        return new BudgetRule(keyBits, valueBits, false, 1, 4);
    }

    @Test
    void codesOnlyTargetIsMetExactlyFromTheUniformBaseUpInImportanceOrder() {
        Allocation allocation = codesOnly(2.25, 3.0).allocate(TWELVE_LAYERS, 32, HEAD_DIM, null);
        // 27 key bits: base 2 for all 12 (24), then layer 7 up to 4 (+2) and layer 2 up to 3 (+1).
        assertArrayEquals(new int[] {2, 2, 3, 2, 2, 2, 2, 4, 2, 2, 2, 2}, keyWidths(allocation.plan()));
        assertArrayEquals(new int[] {3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3}, valueWidths(allocation.plan()));
        assertEquals(2.25, allocation.plan().averageKeyBits());
        assertEquals(List.of(), allocation.notes());
    }

    @Test
    void metadataIsSubtractedBeforeTheCodesAreSpent() {
        // G = 32, D = 128: one group of 32 per scale and minimum for both streams, 1 bit per element.
        Allocation allocation = BudgetRule.of(3.25, 3.5).allocate(TWELVE_LAYERS, 32, HEAD_DIM, null);
        assertArrayEquals(new int[] {2, 2, 3, 2, 2, 2, 2, 4, 2, 2, 2, 2}, keyWidths(allocation.plan()));
        assertArrayEquals(new int[] {2, 2, 2, 2, 2, 2, 2, 2, 2, 4, 4, 4}, valueWidths(allocation.plan()));
        assertEquals(3.25, allocation.plan().averageKeyBitsWithMetadata());
        assertEquals(3.5, allocation.plan().averageValueBitsWithMetadata(HEAD_DIM));
        assertEquals(List.of(), allocation.notes());
    }

    @Test
    void valueMetadataUsesTheValueGroupMinOfGroupSizeAndHeadDim() {
        // G = 128, D = 64: keys pay 32/128 = 0.25 bits per element, values 32/64 = 0.5.
        Allocation allocation = BudgetRule.of(2.25, 3.0).allocate(TWELVE_LAYERS, 128, 64, null);
        assertArrayEquals(new int[] {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, keyWidths(allocation.plan()));
        assertEquals(2.5, allocation.plan().averageValueBits());
        assertEquals(3.0, allocation.plan().averageValueBitsWithMetadata(64));
        assertEquals(List.of(), allocation.notes());
    }

    @Test
    void aFractionalTotalGivesTheClosestPlanBelowAndANote() {
        double[] scores = new double[32];
        Arrays.setAll(scores, layer -> layer);
        LayerImportance importance = new LayerImportance(scores, scores);
        Allocation allocation = BudgetRule.of(3.19, 3.0).allocate(importance, 32, HEAD_DIM, null);
        // 2.19 * 32 = 70.08 code bits: 70 are spent, base 2 (64) and 6 more raise layers 31, 30, 29 to 4.
        int[] expected = new int[32];
        Arrays.fill(expected, 2);
        expected[31] = 4;
        expected[30] = 4;
        expected[29] = 4;
        assertArrayEquals(expected, keyWidths(allocation.plan()));
        assertEquals(List.of("keys: achieved 3.1875 bits per element (codes 2.1875 + metadata 1), target 3.19: "
                + "the target asks for 70.08 code bits over 32 layers and widths are whole bits, so the plan spends 70"),
                allocation.notes());
    }

    @Test
    void aTargetAboveTheCeilingGivesEveryLayerTheCeilingAndANote() {
        Allocation allocation = new BudgetRule(5.5, 2.0, false, 1, 4).allocate(TWELVE_LAYERS, 32, HEAD_DIM, null);
        assertTrue(Arrays.stream(keyWidths(allocation.plan())).allMatch(width -> width == 4));
        assertEquals(List.of("keys: achieved 4 bits per element (codes only), target 5.5: "
                + "every layer is at ceilingBits=4, the most this rule can spend"), allocation.notes());
        Allocation capped = new BudgetRule(3.5, 3.0, false, 2, 3).allocate(TWELVE_LAYERS, 32, HEAD_DIM, null);
        assertTrue(Arrays.stream(keyWidths(capped.plan())).allMatch(width -> width == 3));
        assertEquals(1, capped.notes().size());
        assertTrue(capped.notes().getFirst().contains("ceilingBits=3"), capped.notes().getFirst());
    }

    @Test
    void aTargetBelowEveryLayerAtTheFloorIsRejectedNamingTheMinimum() {
        IllegalArgumentException withMetadata = assertThrows(IllegalArgumentException.class,
                () -> BudgetRule.of(1.5, 3.0).allocate(TWELVE_LAYERS, 32, HEAD_DIM, null));
        assertEquals("targetKeyBits=1.5 is below the cheapest key plan, 2 bits per element (codes 1 + metadata 1)"
                + " with every layer at floorBits=1", withMetadata.getMessage());
        IllegalArgumentException codes = assertThrows(IllegalArgumentException.class,
                () -> new BudgetRule(3.0, 1.9, false, 2, 4).allocate(TWELVE_LAYERS, 32, HEAD_DIM, null));
        assertEquals("targetValueBits=1.9 is below the cheapest value plan, 2 bits per element (codes only)"
                + " with every layer at floorBits=2", codes.getMessage());
    }

    @Test
    void everyWholeBitTotalIsMetExactlyForOneToFortyLayers() {
        Random random = new Random(7);
        for (int layers = 1; layers <= 40; layers++) {
            LayerImportance importance = randomImportance(random, layers);
            for (int total = layers; total <= 4 * layers; total++) {
                double target = (double) total / layers;
                Allocation allocation = codesOnly(target, target).allocate(importance, 32, HEAD_DIM, null);
                assertEquals(total, Arrays.stream(keyWidths(allocation.plan())).sum(), "L=" + layers);
                assertEquals(total, Arrays.stream(valueWidths(allocation.plan())).sum(), "L=" + layers);
                assertEquals(List.of(), allocation.notes(), "L=" + layers + ", total " + total);
            }
        }
    }

    @Test
    void randomTargetsUpgradeAPrefixOfTheImportanceOrderAndNeverExceedTheTarget() {
        Random random = new Random(42);
        int[] groupSizes = {32, 64, 128};
        int[] headDims = {64, 128};
        for (int trial = 0; trial < 2000; trial++) {
            int layers = 1 + random.nextInt(40);
            int floor = 1 + random.nextInt(4);
            int ceiling = floor + random.nextInt(5 - floor);
            boolean countMetadata = random.nextBoolean();
            int groupSize = groupSizes[random.nextInt(groupSizes.length)];
            int headDim = headDims[random.nextInt(headDims.length)];
            double keyMetadata = countMetadata ? 32.0 / groupSize : 0;
            double valueMetadata = countMetadata ? 32.0 / Math.min(groupSize, headDim) : 0;
            double keyTarget = floor + keyMetadata + random.nextDouble() * (ceiling - floor + 0.5);
            double valueTarget = floor + valueMetadata + random.nextDouble() * (ceiling - floor + 0.5);
            BudgetRule rule = new BudgetRule(keyTarget, valueTarget, countMetadata, floor, ceiling);
            LayerImportance importance = randomImportance(random, layers);
            Allocation allocation = rule.allocate(importance, groupSize, headDim, null);
            String context = rule + ", L=" + layers + ", G=" + groupSize + ", D=" + headDim;
            boolean keysExact = checkStream(keyWidths(allocation.plan()), importance.keyRanking(), keyTarget,
                    keyMetadata, floor, ceiling, context);
            boolean valuesExact = checkStream(valueWidths(allocation.plan()), importance.valueRanking(), valueTarget,
                    valueMetadata, floor, ceiling, context);
            assertEquals((keysExact ? 0 : 1) + (valuesExact ? 0 : 1), allocation.notes().size(), context);
            for (LayerQuant layer : allocation.plan().layers()) {
                assertEquals(ResidualPolicy.Ratio.referenceFor(layer.keys().bits().bits()), layer.keys().policy());
                assertEquals(ResidualPolicy.Ratio.referenceFor(layer.values().bits().bits()), layer.values().policy());
            }
        }
    }

    /**
     * Checks one stream against the rule's promises and returns whether it met the target exactly:
     * widths in [floor, ceiling], spending the largest whole-bit total the target allows, never
     * increasing down the importance ranking, with every layer above the base before any below it.
     */
    private static boolean checkStream(int[] widths, int[] ranking, double target, double metadata, int floor,
                                       int ceiling, String context) {
        int layers = widths.length;
        long allowed = (long) Math.floor((target - metadata) * layers + BudgetRule.TOLERANCE_BITS);
        int spent = Arrays.stream(widths).sum();
        assertEquals(Math.min(allowed, (long) ceiling * layers), spent, context);
        assertTrue((double) spent / layers + metadata <= target + 1e-9, context);
        int base = spent / layers;
        for (int rank = 0; rank < layers; rank++) {
            int width = widths[ranking[rank]];
            assertTrue(width >= Math.max(floor, base) && width <= ceiling, context + ": width " + width);
            if (rank > 0) {
                assertTrue(width <= widths[ranking[rank - 1]], context + ": rank " + rank + " wider than rank " + (rank - 1));
            }
        }
        long inBetween = Arrays.stream(widths).filter(width -> width > base && width < ceiling).count();
        assertTrue(inBetween <= 1, context + ": " + inBetween + " layers between base and ceiling");
        return (target - metadata) * layers - spent <= BudgetRule.TOLERANCE_BITS;
    }

    private static LayerImportance randomImportance(Random random, int layers) {
        double[] keys = new double[layers];
        double[] values = new double[layers];
        for (int layer = 0; layer < layers; layer++) {
            // Few distinct values, so that ties are common.
            keys[layer] = random.nextInt(6) * 0.01;
            values[layer] = random.nextDouble();
        }
        return new LayerImportance(keys, values);
    }

    @Test
    void tiedScoresAreUpgradedInLayerOrder() {
        double[] tied = new double[5];
        Arrays.fill(tied, 1.0);
        Allocation allocation = codesOnly(2.8, 2.2).allocate(new LayerImportance(tied, tied), 32, HEAD_DIM, null);
        assertArrayEquals(new int[] {4, 4, 2, 2, 2}, keyWidths(allocation.plan()));
        assertArrayEquals(new int[] {3, 2, 2, 2, 2}, valueWidths(allocation.plan()));
    }

    @Test
    void floorAndCeilingBoundEveryWidth() {
        double[] scores = {0.4, 0.3, 0.2, 0.1};
        LayerImportance importance = new LayerImportance(scores, scores);
        Allocation allocation = new BudgetRule(2.5, 2.75, false, 2, 3).allocate(importance, 32, HEAD_DIM, null);
        assertArrayEquals(new int[] {3, 3, 2, 2}, keyWidths(allocation.plan()));
        assertArrayEquals(new int[] {3, 3, 3, 2}, valueWidths(allocation.plan()));
    }

    @Test
    void aSingleLayerModelGetsTheWidthItsTargetAffords() {
        LayerImportance importance = new LayerImportance(new double[] {0.5}, new double[] {0.5});
        Allocation allocation = BudgetRule.of(3.0, 4.7).allocate(importance, 32, HEAD_DIM, null);
        assertArrayEquals(new int[] {2}, keyWidths(allocation.plan()));
        assertArrayEquals(new int[] {3}, valueWidths(allocation.plan()));
        assertEquals(1, allocation.notes().size());
        assertTrue(allocation.notes().getFirst().startsWith("values: achieved 4 bits per element"),
                allocation.notes().getFirst());
    }

    @Test
    void planRecordsRuleParamsImportanceAndModel() {
        BudgetRule rule = BudgetRule.of(3.25, 3.5);
        assertEquals(new BudgetRule(3.25, 3.5, true, 1, 4), rule);
        QuantPlan plan = rule.allocate(TWELVE_LAYERS, 32, HEAD_DIM, "tiny/llama").plan();
        Map<String, Object> params = new LinkedHashMap<>();
        params.put("target_k_bits", 3.25);
        params.put("target_v_bits", 3.5);
        params.put("count_metadata", true);
        params.put("floor_bits", 1L);
        params.put("ceiling_bits", 4L);
        assertEquals(params, rule.params());
        assertEquals(params, plan.ruleParams());
        assertEquals(List.copyOf(params.keySet()), List.copyOf(plan.ruleParams().keySet()));
        assertEquals("budget", plan.rule());
        assertEquals("tiny/llama", plan.model());
        assertArrayEquals(TWELVE_LAYERS.keys(), plan.keyImportance());
        assertArrayEquals(TWELVE_LAYERS.values(), plan.valueImportance());
    }

    @Test
    void rejectsBadParametersNamingTheField() {
        assertMessage("targetKeyBits=0.0, must be a finite number > 0", () -> BudgetRule.of(0, 3));
        assertMessage("targetValueBits=NaN, must be a finite number > 0", () -> BudgetRule.of(3, Double.NaN));
        assertMessage("floorBits=0, must be 1-4", () -> new BudgetRule(3, 3, true, 0, 4));
        assertMessage("ceilingBits=1, must be floorBits (2) to 4", () -> new BudgetRule(3, 3, true, 2, 1));
        assertMessage("ceilingBits=5, must be floorBits (1) to 4", () -> new BudgetRule(3, 3, true, 1, 5));
        assertMessage("groupSize=0, must be a positive multiple of 32",
                () -> BudgetRule.of(3, 3).allocate(TWELVE_LAYERS, 0, HEAD_DIM, null));
        assertMessage("headDim=-1, must be > 0", () -> BudgetRule.of(3, 3).allocate(TWELVE_LAYERS, 32, -1, null));
    }

    @Test
    void aGroupSizeThatDoesNotFitTheHeadDimensionIsAPlanProblem() {
        PlanValidationException problem = assertThrows(PlanValidationException.class,
                () -> BudgetRule.of(3, 3).allocate(TWELVE_LAYERS, 32, 80, null));
        assertTrue(problem.getMessage().contains("does not divide head_dim 80"), problem.getMessage());
        assertFalse(TiersRule.reference().allocate(TWELVE_LAYERS, 96, 80, null).plan().layers().isEmpty());
    }

    private static void assertMessage(String expected, Runnable action) {
        assertEquals(expected, assertThrows(IllegalArgumentException.class, action::run).getMessage());
    }
}
