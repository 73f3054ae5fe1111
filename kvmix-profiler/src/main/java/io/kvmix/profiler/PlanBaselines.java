package io.kvmix.profiler;

import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.core.plan.StreamQuant;
import io.kvmix.profiler.allocation.LayerImportance;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.IntStream;

/**
 * Control plans for judging a profiled plan: the same per-stream widths (so exactly the same bytes),
 * moved to other layers. If the profiler's importance means anything, its plan should beat the same
 * bits given to the least important layers, and on average beat the bits given to random layers.
 *
 * <p>Keys and values move independently, each by its own importance; every stream keeps the policy
 * that came with its width, and each layer keeps its sinks.
 */
public final class PlanBaselines {
    private PlanBaselines() {
    }

    /**
     * The {@code r}-th most important layer gets the widths the plan gave the {@code r}-th least
     * important one (per stream): the plan's upgrades land on the least important layers.
     */
    public static QuantPlan leastImportant(QuantPlan plan) {
        LayerImportance importance = new LayerImportance(requireImportance(plan.keyImportance(), "key"),
                requireImportance(plan.valueImportance(), "value"));
        int[] keySource = reversedRanks(importance.keyRanking());
        int[] valueSource = reversedRanks(importance.valueRanking());
        Map<String, Object> params = new LinkedHashMap<>(plan.ruleParams());
        params.put("moved_from", plan.rule());
        return reassigned(plan, keySource, valueSource, "least_important", params);
    }

    /** The plan's key widths and value widths each shuffled over the layers with {@code seed}. */
    public static QuantPlan random(QuantPlan plan, long seed) {
        Random random = new Random(seed);
        int[] keySource = shuffled(plan.layerCount(), random);
        int[] valueSource = shuffled(plan.layerCount(), random);
        Map<String, Object> params = new LinkedHashMap<>(plan.ruleParams());
        params.put("moved_from", plan.rule());
        params.put("seed", seed);
        return reassigned(plan, keySource, valueSource, "random_layers", params);
    }

    /** Layer {@code i} takes its keys from layer {@code keySource[i]} and values from {@code valueSource[i]}. */
    private static QuantPlan reassigned(QuantPlan plan, int[] keySource, int[] valueSource, String rule,
                                        Map<String, Object> params) {
        List<LayerQuant> layers = new ArrayList<>(plan.layerCount());
        for (int layer = 0; layer < plan.layerCount(); layer++) {
            StreamQuant keys = plan.layer(keySource[layer]).keys();
            StreamQuant values = plan.layer(valueSource[layer]).values();
            layers.add(new LayerQuant(keys, values, plan.layer(layer).sinks()));
        }
        return new QuantPlan(plan.groupSize(), layers, plan.model(), rule, params, plan.keyImportance(),
                plan.valueImportance());
    }

    /**
     * {@code source[i]}: the layer whose width layer {@code i} takes, so that the layer of importance
     * rank {@code r} ({@code byImportance[r]}, most important first) takes the width of rank {@code L-1-r}.
     */
    private static int[] reversedRanks(int[] byImportance) {
        int layers = byImportance.length;
        int[] source = new int[layers];
        for (int rank = 0; rank < layers; rank++) {
            source[byImportance[rank]] = byImportance[layers - 1 - rank];
        }
        return source;
    }

    private static int[] shuffled(int layers, Random random) {
        int[] order = IntStream.range(0, layers).toArray();
        for (int i = layers - 1; i > 0; i--) {
            int j = random.nextInt(i + 1);
            int swap = order[i];
            order[i] = order[j];
            order[j] = swap;
        }
        return order;
    }

    private static double[] requireImportance(double[] importance, String stream) {
        if (importance == null) {
            throw new IllegalArgumentException("the plan has no " + stream + " importance scores to rank layers by");
        }
        return importance;
    }
}
