package io.kvmix.profiler.allocation;

import java.util.Map;

/**
 * Turns per-layer importance scores into a {@link io.kvmix.core.plan.QuantPlan}: a code width for
 * the keys and one for the values of every layer, each stream with the reference's residual ratio
 * for its width (4 -> 0.3, 3 -> 0.2, 2 -> 0.2, 1 -> 0.1) and no sinks.
 *
 * <p>Keys and values are allocated independently, each from its own ranking
 * ({@link LayerImportance#keyRanking()}, {@link LayerImportance#valueRanking()}): most important
 * layer first, equal scores in layer order. The plan records the rule's {@link #name()} and
 * {@link #params()}, both importance vectors and the model it was made for.
 */
public sealed interface AllocationRule permits TiersRule, BudgetRule {

    /** The rule's name as a plan records it: {@code "tiers"} or {@code "budget"}. */
    String name();

    /**
     * The rule's parameters by their plan-file names (FORMAT.md section 5.1, {@code rule_params});
     * values are {@link String}, {@link Boolean}, {@link Long} or {@link Double}, in a fixed order.
     */
    Map<String, Object> params();

    /**
     * Chooses every layer's widths.
     *
     * @param importance the scores, one key and one value score per layer
     * @param groupSize  the plan's group size {@code G}, a positive multiple of 32
     * @param headDim    the model's head dimension; the value group {@code min(G, headDim)} must divide it
     * @param model      the model the plan is made for, recorded in the plan; may be null
     * @return the plan and, where the rule could not do exactly what was asked, why
     * @throws IllegalArgumentException when the rule cannot make a plan (each rule says when)
     * @throws io.kvmix.core.plan.PlanValidationException when the group size does not fit {@code headDim}
     */
    Allocation allocate(LayerImportance importance, int groupSize, int headDim, String model);
}
