/**
 * Profiler (not implemented yet): the model as a DJL autograd graph, per-layer key/value importance
 * as the L2 norm of the loss gradient on {@code k_proj.weight} / {@code v_proj.weight}, bit
 * allocation rules (tiers, budget) producing a {@link io.kvmix.core.plan.QuantPlan}, and charts.
 */
package io.kvmix.profiler;
