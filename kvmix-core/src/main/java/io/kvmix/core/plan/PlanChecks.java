package io.kvmix.core.plan;

import io.kvmix.core.quant.BitWidth;

import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * The plan-level rules, each phrased once so that {@link QuantPlan}'s constructor, its model checks
 * and the file reader ({@link PlanFiles}) report a broken rule in the same words. Field names in
 * the messages are the JSON names of FORMAT.md section 5, the names a user sees in a plan file.
 */
final class PlanChecks {
    /** Group sizes are whole runs of packed codes along the token axis (FORMAT.md section 3). */
    static final int GROUP_SIZE_STEP = BitWidth.RUN;
    static final String GROUP_SIZE_REQUIREMENT = "a positive multiple of " + GROUP_SIZE_STEP;

    private PlanChecks() {
    }

    static boolean isValidGroupSize(int groupSize) {
        return groupSize > 0 && groupSize % GROUP_SIZE_STEP == 0;
    }

    static Optional<String> groupSizeProblem(int groupSize) {
        return isValidGroupSize(groupSize)
                ? Optional.empty()
                : Optional.of("group_size=" + groupSize + ", must be " + GROUP_SIZE_REQUIREMENT);
    }

    /** An importance vector must score every layer exactly once, with finite numbers. */
    static List<String> importanceProblems(String field, double[] scores, int layerCount) {
        List<String> problems = new ArrayList<>();
        if (scores.length != layerCount) {
            problems.add(field + " has " + scores.length + " entries, plan has " + layerCount + " layers");
        }
        for (int i = 0; i < scores.length; i++) {
            if (!Double.isFinite(scores[i])) {
                problems.add(field + "[" + i + "]=" + scores[i] + ", must be a finite number");
            }
        }
        return problems;
    }

    static Optional<String> layerCountProblem(int planLayers, int modelLayers) {
        return planLayers == modelLayers
                ? Optional.empty()
                : Optional.of("plan has " + planLayers + " layers, model has " + modelLayers);
    }

    /**
     * Values are grouped along channels in groups of {@code min(G, headDim)}; a group must not
     * straddle two heads, so it has to divide the head dimension. The group size is one number for
     * the whole plan, so the problem is reported once, against {@code group_size}.
     */
    static Optional<String> valueGroupProblem(int groupSize, int headDim) {
        int valueGroup = valueGroupSize(groupSize, headDim);
        return headDim % valueGroup == 0
                ? Optional.empty()
                : Optional.of("group_size=" + groupSize + ": value group " + valueGroup
                        + " does not divide head_dim " + headDim
                        + " (use a group size that divides it, or one >= head_dim)");
    }

    static int valueGroupSize(int groupSize, int headDim) {
        return Math.min(groupSize, headDim);
    }

    /** Checks both model shape numbers before any rule uses them: a bad one is a caller's bug. */
    static void requireModelShape(int modelLayers, int headDim) {
        if (modelLayers <= 0) {
            throw new IllegalArgumentException("modelLayers=" + modelLayers + ", must be > 0");
        }
        requireHeadDim(headDim);
    }

    static void requireHeadDim(int headDim) {
        if (headDim <= 0) {
            throw new IllegalArgumentException("headDim=" + headDim + ", must be > 0");
        }
    }

    /** The problems a plan with these raw numbers has against a model; null numbers are unknown. */
    static List<String> modelProblems(Integer planLayers, Integer groupSize, int modelLayers, int headDim) {
        requireModelShape(modelLayers, headDim);
        List<String> problems = new ArrayList<>();
        if (planLayers != null) {
            layerCountProblem(planLayers, modelLayers).ifPresent(problems::add);
        }
        if (groupSize != null) {
            valueGroupProblem(groupSize, headDim).ifPresent(problems::add);
        }
        return problems;
    }
}
