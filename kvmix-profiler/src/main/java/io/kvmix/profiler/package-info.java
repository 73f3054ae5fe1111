/**
 * The KVmix profiler: per-layer key/value importance as the L2 norm of the next-token loss gradient
 * on {@code k_proj.weight} / {@code v_proj.weight}, computed with one forward and one backward pass
 * per calibration prompt through a DJL (PyTorch engine) autograd graph of the model
 * ({@link io.kvmix.profiler.ImportanceProfiler}); bit allocation rules that turn the scores into a
 * {@link io.kvmix.core.plan.QuantPlan} ({@code allocation}); and the importance chart ({@code chart}).
 */
package io.kvmix.profiler;
