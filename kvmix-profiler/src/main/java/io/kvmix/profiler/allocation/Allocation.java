package io.kvmix.profiler.allocation;

import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.plan.QuantPlan;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * What an {@link AllocationRule} chose: the plan, and a human-readable account of anything it could
 * not do as asked (for example a budget target that whole-bit widths cannot meet exactly, or a
 * tiers rule that upgrades nothing on a small model). No notes means the rule did exactly what its
 * parameters say.
 */
public record Allocation(QuantPlan plan, List<String> notes) {
    public Allocation {
        Objects.requireNonNull(plan, "plan");
        notes = List.copyOf(notes);
    }

    /**
     * The plan a rule made: layer {@code i} gets {@code keyWidths[i]}-bit keys and
     * {@code valueWidths[i]}-bit values with the reference's ratio for each width, checked against
     * the model's head dimension.
     */
    static Allocation fromWidths(AllocationRule rule, LayerImportance importance, int[] keyWidths,
                                 int[] valueWidths, int groupSize, int headDim, String model,
                                 List<String> notes) {
        List<LayerQuant> layers = new ArrayList<>(keyWidths.length);
        for (int layer = 0; layer < keyWidths.length; layer++) {
            layers.add(LayerQuant.reference(keyWidths[layer], valueWidths[layer]));
        }
        QuantPlan plan = new QuantPlan(groupSize, layers, model, rule.name(), rule.params(),
                importance.keys(), importance.values());
        plan.validate(importance.layerCount(), headDim);
        return new Allocation(plan, notes);
    }
}
