package io.kvmix.profiler;

import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.plan.QuantPlan;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.assertThrows;

class PlanBaselinesTest {
    /** Layers 0..5; keys: layer 4 most important (K3), then 1 (K3); values: layer 0 (V4), then 5 (V4). */
    private static QuantPlan profiledPlan() {
        double[] keys = {0.1, 0.5, 0.2, 0.05, 0.9, 0.3};
        double[] values = {2.0, 0.1, 0.2, 0.3, 0.4, 1.0};
        List<LayerQuant> layers = new ArrayList<>();
        for (int layer = 0; layer < 6; layer++) {
            int k = layer == 4 || layer == 1 ? 3 : 2;
            int v = layer == 0 || layer == 5 ? 4 : 2;
            layers.add(LayerQuant.reference(k, v).withSinks(layer));
        }
        return new QuantPlan(32, layers, "m", "tiers", Map.of("x", 1L), keys, values);
    }

    private static int[] keyBits(QuantPlan plan) {
        return plan.layers().stream().mapToInt(l -> l.keys().bits().bits()).toArray();
    }

    private static int[] valueBits(QuantPlan plan) {
        return plan.layers().stream().mapToInt(l -> l.values().bits().bits()).toArray();
    }

    @Test
    void leastImportantMovesTheUpgradesToTheBottomRanks() {
        QuantPlan moved = PlanBaselines.leastImportant(profiledPlan());
        // key ranks: 4, 1, 5, 2, 0, 3 -> the two least important keys are 3 and 0
        assertEquals(List.of(3, 2, 2, 3, 2, 2), boxed(keyBits(moved)));
        // value ranks: 0, 5, 4, 3, 2, 1 -> the two least important values are 1 and 2
        assertEquals(List.of(2, 4, 4, 2, 2, 2), boxed(valueBits(moved)));
        assertEquals("least_important", moved.rule());
        assertEquals("tiers", moved.ruleParams().get("moved_from"));
        for (int layer = 0; layer < 6; layer++) {
            assertEquals(layer, moved.layer(layer).sinks(), "sinks stay with their layer");
            assertEquals(moved.layer(layer).values().policy(),
                    LayerQuant.reference(2, valueBits(moved)[layer]).values().policy(), "policy travels with the width");
        }
        assertEquals(profiledPlan().averageKeyBits(), moved.averageKeyBits());
        assertEquals(profiledPlan().averageValueBits(), moved.averageValueBits());
    }

    @Test
    void randomKeepsTheMultisetAndDependsOnTheSeed() {
        QuantPlan plan = profiledPlan();
        QuantPlan one = PlanBaselines.random(plan, 1);
        assertEquals(one, PlanBaselines.random(plan, 1));
        assertEquals(sorted(keyBits(plan)), sorted(keyBits(one)));
        assertEquals(sorted(valueBits(plan)), sorted(valueBits(one)));
        assertEquals(1L, one.ruleParams().get("seed"));
        boolean anyDifferent = false;
        for (long seed = 2; seed < 10; seed++) {
            anyDifferent |= !PlanBaselines.random(plan, seed).layers().equals(one.layers());
        }
        assertTrue(anyDifferent, "different seeds give different layers");
    }

    @Test
    void aPlanWithoutImportanceCannotBeRanked() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PlanBaselines.leastImportant(QuantPlan.uniform(4, 2, 2, 32)));
        assertEquals("the plan has no key importance scores to rank layers by", e.getMessage());
    }

    private static List<Integer> boxed(int[] values) {
        return java.util.Arrays.stream(values).boxed().toList();
    }

    private static List<Integer> sorted(int[] values) {
        return java.util.Arrays.stream(values).sorted().boxed().toList();
    }
}
