package io.kvmix.core.plan;

import io.kvmix.core.quant.BitWidth;
import org.junit.jupiter.api.Test;

import java.math.BigDecimal;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class QuantPlanTest {
    private static final double EXACT = 0;

    /** K3V4, K2V2, K2V2, K1V2: keys average 2.0, values 2.5. */
    private static QuantPlan mixed(int groupSize) {
        return new QuantPlan(groupSize, List.of(
                LayerQuant.reference(3, 4), LayerQuant.reference(2, 2),
                LayerQuant.reference(2, 2), LayerQuant.reference(1, 2)));
    }

    private static QuantPlan withProvenance() {
        Map<String, Object> params = new LinkedHashMap<>();
        params.put("k_target_bits", 2.19);
        params.put("upgrades", 3);
        return new QuantPlan(32, List.of(LayerQuant.reference(3, 4), LayerQuant.reference(2, 2)),
                "meta-llama/Llama-2-7b-hf", "budget", params, new double[] {0.5, 0.25}, new double[] {1.0, 2.0});
    }

    @Test
    void uniformGivesEveryLayerTheReferenceRatioOfItsWidth() {
        QuantPlan plan = QuantPlan.uniform(32, 2, 4, 32);
        assertEquals(32, plan.layerCount());
        for (LayerQuant layer : plan.layers()) {
            assertEquals(new StreamQuant(BitWidth.TWO, new ResidualPolicy.Ratio(0.2)), layer.keys());
            assertEquals(new StreamQuant(BitWidth.FOUR, new ResidualPolicy.Ratio(0.3)), layer.values());
            assertEquals(0, layer.sinks());
        }
        assertEquals(QuantPlan.RULE_UNIFORM, plan.rule());
        assertEquals(Map.of("k_bits", 2L, "v_bits", 4L), plan.ruleParams());
        assertNull(plan.model());
        assertNull(plan.keyImportance());
        assertEquals(new ResidualPolicy.Ratio(0.1), QuantPlan.uniform(1, 1, 3, 32).layer(0).keys().policy());
        assertEquals(new ResidualPolicy.Ratio(0.2), QuantPlan.uniform(1, 1, 3, 32).layer(0).values().policy());
    }

    @Test
    void uniformK2V2AveragesTwoBitsAndThreeWithMetadata() {
        QuantPlan plan = QuantPlan.uniform(32, 2, 2, 32);
        assertEquals(2.0, plan.averageKeyBits(), EXACT);
        assertEquals(2.0, plan.averageValueBits(), EXACT);
        assertEquals(3.0, plan.averageKeyBitsWithMetadata(), EXACT);
        assertEquals(3.0, plan.averageValueBitsWithMetadata(128), EXACT);
    }

    @Test
    void mixedPlanAverages() {
        QuantPlan plan = mixed(32);
        assertEquals(2.0, plan.averageKeyBits(), EXACT);
        assertEquals(2.5, plan.averageValueBits(), EXACT);
        assertEquals(3.0, plan.averageKeyBitsWithMetadata(), EXACT);
        assertEquals(3.5, plan.averageValueBitsWithMetadata(128), EXACT);
    }

    /** G = 64: keys pay 32/64 = 0.5 bit; values pay 32/min(64, D). */
    @Test
    void metadataFollowsTheGroupSizeAndForValuesTheHeadDim() {
        QuantPlan plan = mixed(64);
        assertEquals(2.5, plan.averageKeyBitsWithMetadata(), EXACT);
        assertEquals(3.0, plan.averageValueBitsWithMetadata(128), EXACT);
        assertEquals(64, plan.valueGroupSize(128));
        assertEquals(2.5 + 32.0 / 48, plan.averageValueBitsWithMetadata(48), 1e-15);
        assertEquals(48, plan.valueGroupSize(48));
        assertEquals(3.0, mixed(256).averageValueBitsWithMetadata(64), EXACT);
    }

    @Test
    void transformationsReturnNewPlansAndKeepProvenance() {
        QuantPlan plan = withProvenance();

        QuantPlan regrouped = plan.withGroupSize(128);
        assertEquals(128, regrouped.groupSize());
        assertEquals(plan.layers(), regrouped.layers());
        assertEquals(32, plan.groupSize());

        QuantPlan windowed = plan.withResidualWindow(128);
        for (LayerQuant layer : windowed.layers()) {
            assertEquals(new ResidualPolicy.Window(128), layer.keys().policy());
            assertEquals(new ResidualPolicy.Window(128), layer.values().policy());
        }
        assertEquals(BitWidth.THREE, windowed.layer(0).keys().bits());
        assertEquals(BitWidth.FOUR, windowed.layer(0).values().bits());
        assertEquals(new ResidualPolicy.Ratio(0.2), plan.layer(0).keys().policy());

        QuantPlan sunk = plan.withSinks(4);
        assertTrue(sunk.layers().stream().allMatch(layer -> layer.sinks() == 4));
        assertEquals(plan.layer(1).keys(), sunk.layer(1).keys());

        for (QuantPlan changed : List.of(regrouped, windowed, sunk)) {
            assertEquals(plan.model(), changed.model());
            assertEquals(plan.rule(), changed.rule());
            assertEquals(plan.ruleParams(), changed.ruleParams());
            assertArrayEquals(plan.keyImportance(), changed.keyImportance());
            assertArrayEquals(plan.valueImportance(), changed.valueImportance());
        }
    }

    @Test
    void transformationsRejectBadValuesByName() {
        QuantPlan plan = mixed(32);
        assertEquals("group_size=48, must be a positive multiple of 32",
                assertThrows(IllegalArgumentException.class, () -> plan.withGroupSize(48)).getMessage());
        assertEquals("residual window=-1, must be >= 0",
                assertThrows(IllegalArgumentException.class, () -> plan.withResidualWindow(-1)).getMessage());
        assertEquals("sinks=-2, must be >= 0",
                assertThrows(IllegalArgumentException.class, () -> plan.withSinks(-2)).getMessage());
    }

    @Test
    void constructorRejectsAnInconsistentPlan() {
        List<LayerQuant> two = List.of(LayerQuant.reference(2, 2), LayerQuant.reference(2, 2));
        assertEquals("group_size=0, must be a positive multiple of 32",
                assertThrows(IllegalArgumentException.class, () -> new QuantPlan(0, two)).getMessage());
        assertEquals("plan has no layers",
                assertThrows(IllegalArgumentException.class, () -> new QuantPlan(32, List.of())).getMessage());
        assertEquals("k_importance has 3 entries, plan has 2 layers", assertThrows(IllegalArgumentException.class,
                () -> new QuantPlan(32, two, null, null, null, new double[3], null)).getMessage());
        assertEquals("v_importance[1]=NaN, must be a finite number", assertThrows(IllegalArgumentException.class,
                () -> new QuantPlan(32, two, null, null, null, null, new double[] {1, Double.NaN})).getMessage());
        assertEquals("rule_params.fraction=0.1 (BigDecimal), must be a string, boolean, integer or finite "
                        + "floating-point number", assertThrows(IllegalArgumentException.class, () -> new QuantPlan(
                32, two, null, "tiers", Map.of("fraction", new BigDecimal("0.1")), null, null)).getMessage());
        assertEquals("rule_params.k_target_bits=Infinity (Double), must be a string, boolean, integer or finite "
                        + "floating-point number", assertThrows(IllegalArgumentException.class, () -> new QuantPlan(
                32, two, null, "budget", Map.of("k_target_bits", Double.POSITIVE_INFINITY), null, null)).getMessage());
    }

    @Test
    void ruleParamsAreNormalizedOrderedAndImmutable() {
        Map<String, Object> params = new LinkedHashMap<>();
        params.put("z_int", 3);
        params.put("a_float", 0.5f);
        params.put("m_text", "wikitext");
        params.put("b_flag", true);
        params.put("c_long", 7L);
        QuantPlan plan = new QuantPlan(32, List.of(LayerQuant.reference(2, 2)), null, "tiers", params, null, null);
        assertEquals(List.of("z_int", "a_float", "m_text", "b_flag", "c_long"), List.copyOf(plan.ruleParams().keySet()));
        assertEquals(3L, plan.ruleParams().get("z_int"));
        assertEquals(0.5, plan.ruleParams().get("a_float"));
        assertEquals(7L, plan.ruleParams().get("c_long"));
        assertThrows(UnsupportedOperationException.class, () -> plan.ruleParams().put("x", 1L));
        params.put("late", 1);
        assertEquals(5, plan.ruleParams().size());
        assertEquals(Map.of(), mixed(32).ruleParams());
    }

    @Test
    void importanceIsCopiedInAndOut() {
        double[] scores = {0.5, 0.25};
        QuantPlan plan = new QuantPlan(32, List.of(LayerQuant.reference(2, 2), LayerQuant.reference(2, 2)),
                null, null, null, scores, null);
        scores[0] = 99;
        assertEquals(0.5, plan.keyImportance()[0], EXACT);
        plan.keyImportance()[1] = 99;
        assertEquals(0.25, plan.keyImportance()[1], EXACT);
    }

    @Test
    void equalityComparesImportanceByValue() {
        assertEquals(withProvenance(), withProvenance());
        assertEquals(withProvenance().hashCode(), withProvenance().hashCode());
        QuantPlan other = withProvenance();
        QuantPlan changed = new QuantPlan(other.groupSize(), other.layers(), other.model(), other.rule(),
                other.ruleParams(), new double[] {0.5, 0.26}, other.valueImportance());
        assertNotEquals(other, changed);
        assertTrue(other.toString().contains("keyImportance=[0.5, 0.25]"));
    }

    @Test
    void layerAccessNamesTheBadIndex() {
        assertEquals(LayerQuant.reference(1, 2), mixed(32).layer(3));
        assertEquals("layer 4, plan has 4 layers",
                assertThrows(IndexOutOfBoundsException.class, () -> mixed(32).layer(4)).getMessage());
    }

    @Test
    void aPlanThatFitsTheModelHasNoProblems() {
        assertEquals(List.of(), mixed(32).problems(4, 128));
        mixed(32).validate(4, 128);
        assertEquals(List.of(), mixed(96).problems(4, 80), "G > head_dim: one value group per head");
        assertEquals(List.of(), mixed(32).problems(4, 96));
        assertEquals(List.of(), mixed(64).problems(4, 64));
    }

    @Test
    void everyModelMismatchIsReportedAtOnce() {
        QuantPlan plan = mixed(32);
        List<String> expected = List.of(
                "plan has 4 layers, model has 32",
                "group_size=32: value group 32 does not divide head_dim 80"
                        + " (use a group size that divides it, or one >= head_dim)");
        assertEquals(expected, plan.problems(32, 80));
        PlanValidationException e = assertThrows(PlanValidationException.class, () -> plan.validate(32, 80));
        assertEquals(expected, e.problems());
        assertEquals(String.join("\n", expected), e.getMessage());
        assertNull(e.source());
        assertEquals(List.of("group_size=64: value group 64 does not divide head_dim 96"
                + " (use a group size that divides it, or one >= head_dim)"), mixed(64).problems(4, 96));
    }

    @Test
    void modelShapeMustBePositive() {
        assertEquals("modelLayers=0, must be > 0",
                assertThrows(IllegalArgumentException.class, () -> mixed(32).problems(0, 128)).getMessage());
        assertEquals("headDim=-1, must be > 0",
                assertThrows(IllegalArgumentException.class, () -> mixed(32).problems(4, -1)).getMessage());
        assertEquals("headDim=0, must be > 0", assertThrows(IllegalArgumentException.class,
                () -> mixed(32).averageValueBitsWithMetadata(0)).getMessage());
    }

    @Test
    void validationExceptionPrefixesEveryLineWithTheSource() {
        PlanValidationException e = new PlanValidationException("plan.json", List.of("a", "b"));
        assertEquals("plan.json: a\nplan.json: b", e.getMessage());
        assertEquals(List.of("a", "b"), e.problems());
        assertEquals("plan.json", e.source());
        assertTrue(e instanceof IllegalArgumentException);
    }
}
