/**
 * Allocation rules: from per-layer key and value importance ({@link io.kvmix.profiler.allocation.LayerImportance})
 * to a {@link io.kvmix.core.plan.QuantPlan}. {@link io.kvmix.profiler.allocation.TiersRule} is the
 * reference's fixed tiers; {@link io.kvmix.profiler.allocation.BudgetRule} meets target average bits.
 */
package io.kvmix.profiler.allocation;
