package io.kvmix.core.plan;

import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.ToIntFunction;
import java.util.function.UnaryOperator;

/**
 * A whole model's KV-cache quantization: one {@link LayerQuant} per layer, the group size shared by
 * every layer, and where the plan came from.
 *
 * <p>A constructed plan is always internally consistent (the constructor throws otherwise). Whether
 * it fits a particular model is a separate question, answered by {@link #problems(int, int)}:
 * the layer count must match and the value group must divide the head dimension.
 * {@link PlanFiles} reads and writes plans as JSON (FORMAT.md section 5).
 *
 * @param groupSize       tokens per packed block, and the quantization group length (keys group
 *                        {@code G} tokens per channel, values {@code min(G, headDim)} channels per
 *                        token); a positive multiple of 32
 * @param layers          one entry per layer, layer 0 first; never empty
 * @param model           the model the plan was made for (e.g. a Hugging Face id), or null
 * @param rule            the rule that chose the bits ({@code "tiers"}, {@code "budget"},
 *                        {@code "uniform"}, {@code "imported"}, ...), or null when unknown
 * @param ruleParams      the rule's parameters by name; values are {@link String}, {@link Boolean},
 *                        {@link Long} or {@link Double} (other integer types become {@code Long},
 *                        {@code Float} becomes {@code Double}) so they survive a JSON round trip;
 *                        null means none; iteration order is kept
 * @param keyImportance   per-layer key importance (the profiler's gradient norms), or null
 * @param valueImportance per-layer value importance, or null
 */
public record QuantPlan(
        int groupSize,
        List<LayerQuant> layers,
        String model,
        String rule,
        Map<String, Object> ruleParams,
        double[] keyImportance,
        double[] valueImportance) {

    /** The group size a plan gets when it does not say (the reference's). */
    public static final int DEFAULT_GROUP_SIZE = 32;
    /** Bits stored per quantization group: an fp16 scale and an fp16 minimum. */
    public static final int METADATA_BITS_PER_GROUP = 32;
    /** {@link #rule()} of a plan from {@link #uniform}. */
    public static final String RULE_UNIFORM = "uniform";
    /** {@link #rule()} of a plan read from the reference's {@code quant_bits} dict. */
    public static final String RULE_IMPORTED = "imported";

    public QuantPlan {
        PlanChecks.groupSizeProblem(groupSize).ifPresent(problem -> {
            throw new IllegalArgumentException(problem);
        });
        Objects.requireNonNull(layers, "layers");
        layers = List.copyOf(layers);
        if (layers.isEmpty()) {
            throw new IllegalArgumentException("plan has no layers");
        }
        ruleParams = normalizedRuleParams(ruleParams);
        keyImportance = checkedImportance("k_importance", keyImportance, layers.size());
        valueImportance = checkedImportance("v_importance", valueImportance, layers.size());
    }

    /** A plan without provenance: no model, no rule, no parameters, no importance scores. */
    public QuantPlan(int groupSize, List<LayerQuant> layers) {
        this(groupSize, layers, null, null, null, null, null);
    }

    /**
     * Every layer gets {@code kBits}-bit keys and {@code vBits}-bit values with the reference's
     * residual ratio for each width (4 -> 0.3, 3 -> 0.2, 2 -> 0.2, 1 -> 0.1) and no sinks.
     */
    public static QuantPlan uniform(int layers, int kBits, int vBits, int groupSize) {
        if (layers <= 0) {
            throw new IllegalArgumentException("layers=" + layers + ", must be > 0");
        }
        LayerQuant layer = LayerQuant.reference(kBits, vBits);
        Map<String, Object> params = new LinkedHashMap<>();
        params.put("k_bits", kBits);
        params.put("v_bits", vBits);
        return new QuantPlan(groupSize, Collections.nCopies(layers, layer), null, RULE_UNIFORM, params, null, null);
    }

    public int layerCount() {
        return layers.size();
    }

    public LayerQuant layer(int index) {
        if (index < 0 || index >= layers.size()) {
            throw new IndexOutOfBoundsException("layer " + index + ", plan has " + layers.size() + " layers");
        }
        return layers.get(index);
    }

    /** A copy of the key importance scores, or null when the plan has none. */
    @Override
    public double[] keyImportance() {
        return keyImportance == null ? null : keyImportance.clone();
    }

    /** A copy of the value importance scores, or null when the plan has none. */
    @Override
    public double[] valueImportance() {
        return valueImportance == null ? null : valueImportance.clone();
    }

    /** The same plan with another group size (provenance kept). */
    public QuantPlan withGroupSize(int newGroupSize) {
        return new QuantPlan(newGroupSize, layers, model, rule, ruleParams, keyImportance, valueImportance);
    }

    /**
     * The same plan where every stream keeps a KIVI-style window of the newest {@code tokens} ..
     * {@code tokens + G - 1} tokens in full precision instead of its previous policy.
     */
    public QuantPlan withResidualWindow(int tokens) {
        ResidualPolicy window = new ResidualPolicy.Window(tokens);
        return withEachLayer(layer -> layer.withPolicy(window));
    }

    /** The same plan where every layer keeps its first {@code sinks} tokens in full precision. */
    public QuantPlan withSinks(int sinks) {
        return withEachLayer(layer -> layer.withSinks(sinks));
    }

    private QuantPlan withEachLayer(UnaryOperator<LayerQuant> change) {
        List<LayerQuant> changed = layers.stream().map(change).toList();
        return new QuantPlan(groupSize, changed, model, rule, ruleParams, keyImportance, valueImportance);
    }

    /** Mean key code width over the layers, codes only (the figure papers quote, e.g. 2.19). */
    public double averageKeyBits() {
        return averageBits(layer -> layer.keys().bits().bits());
    }

    /** Mean value code width over the layers, codes only. */
    public double averageValueBits() {
        return averageBits(layer -> layer.values().bits().bits());
    }

    /**
     * Mean key cost per element including the fp16 scale and minimum of each group of {@code G}
     * tokens: {@link #averageKeyBits()} + 32 / G. It does not depend on the head dimension. This is
     * the nominal figure; when the head dimension is not a multiple of 32, the last run of packed
     * channels is zero-padded (FORMAT.md section 3), which the cache's exact byte counts include.
     */
    public double averageKeyBitsWithMetadata() {
        return averageKeyBits() + (double) METADATA_BITS_PER_GROUP / groupSize;
    }

    /**
     * Mean value cost per element including metadata: {@link #averageValueBits()} + 32 / Gv, where
     * values share a scale and minimum per {@code Gv = min(G, headDim)} channels of a token.
     */
    public double averageValueBitsWithMetadata(int headDim) {
        return averageValueBits() + (double) METADATA_BITS_PER_GROUP / valueGroupSize(headDim);
    }

    /** Channels per value group: {@code min(G, headDim)} (one group per head when G exceeds it). */
    public int valueGroupSize(int headDim) {
        PlanChecks.requireHeadDim(headDim);
        return PlanChecks.valueGroupSize(groupSize, headDim);
    }

    private double averageBits(ToIntFunction<LayerQuant> bitsOfLayer) {
        return layers.stream().mapToInt(bitsOfLayer).average().orElseThrow();
    }

    /**
     * Everything that stops this plan from serving a model with {@code modelLayers} layers and
     * head dimension {@code headDim}, one message per problem; empty when it fits.
     */
    public List<String> problems(int modelLayers, int headDim) {
        return PlanChecks.modelProblems(layers.size(), groupSize, modelLayers, headDim);
    }

    /**
     * Throws a {@link PlanValidationException} listing every problem of {@link #problems} when the
     * plan does not fit the model.
     */
    public void validate(int modelLayers, int headDim) {
        List<String> problems = problems(modelLayers, headDim);
        if (!problems.isEmpty()) {
            throw new PlanValidationException(null, problems);
        }
    }

    private static double[] checkedImportance(String field, double[] scores, int layerCount) {
        if (scores == null) {
            return null;
        }
        List<String> problems = PlanChecks.importanceProblems(field, scores, layerCount);
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException(String.join("; ", problems));
        }
        return scores.clone();
    }

    private static Map<String, Object> normalizedRuleParams(Map<String, Object> params) {
        if (params == null) {
            return Map.of();
        }
        Map<String, Object> normalized = new LinkedHashMap<>();
        params.forEach((name, value) -> {
            Objects.requireNonNull(name, "rule_params name");
            normalized.put(name, normalizedRuleParam(name, value));
        });
        return Collections.unmodifiableMap(normalized);
    }

    private static Object normalizedRuleParam(String name, Object value) {
        return switch (value) {
            case String text -> text;
            case Boolean flag -> flag;
            case Long number -> number;
            case Integer number -> number.longValue();
            case Short number -> number.longValue();
            case Byte number -> number.longValue();
            case Double number when Double.isFinite(number) -> number;
            case Float number when Float.isFinite(number) -> number.doubleValue();
            case null -> throw new IllegalArgumentException("rule_params." + name + " is null");
            default -> throw new IllegalArgumentException("rule_params." + name + "=" + value
                    + " (" + value.getClass().getSimpleName()
                    + "), must be a string, boolean, integer or finite floating-point number");
        };
    }

    /** Plans are equal when every component is, importance scores compared element by element. */
    @Override
    public boolean equals(Object other) {
        return other instanceof QuantPlan that
                && groupSize == that.groupSize
                && layers.equals(that.layers)
                && Objects.equals(model, that.model)
                && Objects.equals(rule, that.rule)
                && ruleParams.equals(that.ruleParams)
                && Arrays.equals(keyImportance, that.keyImportance)
                && Arrays.equals(valueImportance, that.valueImportance);
    }

    @Override
    public int hashCode() {
        return Objects.hash(groupSize, layers, model, rule, ruleParams,
                Arrays.hashCode(keyImportance), Arrays.hashCode(valueImportance));
    }

    @Override
    public String toString() {
        return "QuantPlan[groupSize=" + groupSize + ", model=" + model + ", rule=" + rule
                + ", ruleParams=" + ruleParams + ", layers=" + layers
                + ", keyImportance=" + Arrays.toString(keyImportance)
                + ", valueImportance=" + Arrays.toString(valueImportance) + "]";
    }
}
