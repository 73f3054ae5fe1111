package io.kvmix.profiler.allocation;

import io.kvmix.core.plan.PlanFiles;
import io.kvmix.core.plan.QuantPlan;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

class AllocationRoundTripTest {
    private static final LayerImportance IMPORTANCE = new LayerImportance(
            new double[] {0.0132, 0.0047, 0.021, 0.0051, 0.3, 1e-5, 0.0, 0.125, 0.07, 0.011, 0.012, 0.013},
            new double[] {0.021, 0.0051, 0.0132, 0.0047, 0.0, 0.3, 1e-5, 0.07, 0.125, 0.013, 0.012, 0.011});

    @Test
    void plansOfBothRulesSurviveWritingAndReadingWithImportanceRuleAndParams() {
        for (AllocationRule rule : List.of(TiersRule.reference(), BudgetRule.of(3.19, 3.5),
                new BudgetRule(2.5, 2.0, false, 2, 3))) {
            QuantPlan plan = rule.allocate(IMPORTANCE, 32, 128, "meta-llama/Llama-2-7b-hf").plan();
            String json = PlanFiles.toJson(plan);
            QuantPlan read = PlanFiles.readJson(json, "plan.json", IMPORTANCE.layerCount(), 128);
            assertEquals(plan, read, json);
            assertEquals(rule.name(), read.rule());
            assertEquals(rule.params(), read.ruleParams());
            assertArrayEquals(IMPORTANCE.keys(), read.keyImportance());
            assertArrayEquals(IMPORTANCE.values(), read.valueImportance());
            assertEquals("meta-llama/Llama-2-7b-hf", read.model());
            assertEquals(json, PlanFiles.toJson(read));
        }
    }
}
