package io.kvmix.core.plan;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.core.quant.BitWidth;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SortedMap;
import java.util.TreeMap;
import java.util.function.IntPredicate;
import java.util.regex.Pattern;

import static io.kvmix.core.plan.PlanFiles.FORMAT;
import static io.kvmix.core.plan.PlanFiles.FORMAT_NAME;
import static io.kvmix.core.plan.PlanFiles.FORMAT_VERSION;
import static io.kvmix.core.plan.PlanFiles.GROUP_SIZE;
import static io.kvmix.core.plan.PlanFiles.K_BITS;
import static io.kvmix.core.plan.PlanFiles.K_IMPORTANCE;
import static io.kvmix.core.plan.PlanFiles.K_POLICY;
import static io.kvmix.core.plan.PlanFiles.K_RESIDUAL_RATIO;
import static io.kvmix.core.plan.PlanFiles.LAYER;
import static io.kvmix.core.plan.PlanFiles.LAYERS;
import static io.kvmix.core.plan.PlanFiles.LAYER_FIELDS;
import static io.kvmix.core.plan.PlanFiles.MODEL;
import static io.kvmix.core.plan.PlanFiles.PLAN_FIELDS;
import static io.kvmix.core.plan.PlanFiles.POLICY_TYPE;
import static io.kvmix.core.plan.PlanFiles.RATIO;
import static io.kvmix.core.plan.PlanFiles.REFERENCE_GROUP_SIZE;
import static io.kvmix.core.plan.PlanFiles.REFERENCE_LAYER_FIELDS;
import static io.kvmix.core.plan.PlanFiles.RULE;
import static io.kvmix.core.plan.PlanFiles.RULE_PARAMS;
import static io.kvmix.core.plan.PlanFiles.SINKS;
import static io.kvmix.core.plan.PlanFiles.VERSION;
import static io.kvmix.core.plan.PlanFiles.V_BITS;
import static io.kvmix.core.plan.PlanFiles.V_IMPORTANCE;
import static io.kvmix.core.plan.PlanFiles.V_POLICY;
import static io.kvmix.core.plan.PlanFiles.V_RESIDUAL_RATIO;
import static io.kvmix.core.plan.PlanFiles.WINDOW;
import static io.kvmix.core.plan.PlanFiles.WINDOW_TOKENS;

/**
 * Turns a parsed JSON tree into a {@link QuantPlan}, in either file format.
 *
 * <p>The records a plan is made of throw on the first bad value, which would hide every later
 * mistake in a file. So the reader checks the raw JSON values first, records one message per
 * problem, and only builds the plan when there is none. A method that meets a bad value reports it
 * and returns null; its caller keeps checking the rest.
 */
final class PlanReader {
    /** The model a plan is checked against while it is read. */
    record ModelShape(int layers, int headDim) {
    }

    /** Where a value sits: the layer it belongs to (null at top level) and its field path. */
    private record Scope(String layerLabel, String path) {
        static final Scope TOP = new Scope(null, "");

        static Scope layer(int index) {
            return new Scope("layer " + index, "");
        }

        Scope inside(String field) {
            return new Scope(layerLabel, path + field + ".");
        }

        String name(String field) {
            return path + field;
        }
    }

    /** An integer field's requirement, phrased once for a wrong type and once for a bad value. */
    private record IntRule(String forType, String forValue, IntPredicate accepts) {
        static final IntRule BITS = new IntRule("an integer 1-4", "1-4",
                bits -> bits >= BitWidth.ONE.bits() && bits <= BitWidth.FOUR.bits());
        static final IntRule NON_NEGATIVE = new IntRule("an integer >= 0", ">= 0", n -> n >= 0);
        static final IntRule GROUP = new IntRule(PlanChecks.GROUP_SIZE_REQUIREMENT,
                PlanChecks.GROUP_SIZE_REQUIREMENT, PlanChecks::isValidGroupSize);

        static IntRule exactly(int expected, String why) {
            return new IntRule("the integer " + expected + why, expected + why, n -> n == expected);
        }
    }

    /** Keys of a reference dict; leading zeros and out-of-range values are reported later. */
    private static final Pattern DECIMAL = Pattern.compile("[0-9]+");
    /** Longer values are cut in messages: a message names a value, it does not dump a file. */
    private static final int MAX_SHOWN_CHARS = 60;

    private final List<String> problems = new ArrayList<>();

    private PlanReader() {
    }

    /**
     * @param model checked against in the same pass, or null
     * @throws PlanValidationException with every problem, each prefixed with {@code source}
     */
    static QuantPlan read(JsonNode root, String source, ModelShape model) {
        PlanReader reader = new PlanReader();
        QuantPlan plan = reader.plan(root, model);
        if (!reader.problems.isEmpty()) {
            throw new PlanValidationException(source, reader.problems);
        }
        return plan;
    }

    private QuantPlan plan(JsonNode root, ModelShape model) {
        if (root == null || root.isMissingNode()) {
            problems.add("no JSON value (the input is empty)");
            return null;
        }
        if (!(root instanceof ObjectNode object)) {
            problems.add("top-level value is " + show(root)
                    + ", must be a JSON object (a kvmix plan or a quant_bits dict)");
            return null;
        }
        if (object.has(FORMAT)) {
            return ownPlan(object, model);
        }
        if (object.isEmpty()) {
            problems.add("empty JSON object: neither a kvmix plan (no \"format\") nor a quant_bits dict (no layers)");
            return null;
        }
        for (String key : object.properties().stream().map(Map.Entry::getKey).toList()) {
            if (!DECIMAL.matcher(key).matches()) {
                problems.add("unknown format: no \"" + FORMAT + "\": \"" + FORMAT_NAME + "\" field, and key \""
                        + key + "\" is not a layer index as in a quant_bits dict");
                return null;
            }
        }
        return referencePlan(object, model);
    }

    private QuantPlan ownPlan(ObjectNode root, ModelShape model) {
        Scope top = Scope.TOP;
        rejectUnknownFields(root, top, PLAN_FIELDS);
        JsonNode format = root.get(FORMAT);
        if (!FORMAT_NAME.equals(format.textValue())) {
            report(top, FORMAT + "=" + show(format) + ", must be \"" + FORMAT_NAME + "\"");
        }
        integer(required(root, top, VERSION), top, VERSION,
                IntRule.exactly(FORMAT_VERSION, " (the version this library reads)"));
        String modelName = text(optional(root, MODEL), top, MODEL);
        Integer groupSize = optionalInteger(root, top, GROUP_SIZE, IntRule.GROUP, QuantPlan.DEFAULT_GROUP_SIZE);
        String rule = text(optional(root, RULE), top, RULE);
        Map<String, Object> ruleParams = ruleParams(optional(root, RULE_PARAMS));
        JsonNode layersNode = required(root, top, LAYERS);
        List<LayerQuant> layers = ownLayers(layersNode);
        Integer layerCount = layersNode != null && layersNode.isArray() ? layersNode.size() : null;
        double[] keyImportance = importance(optional(root, K_IMPORTANCE), K_IMPORTANCE, layerCount);
        double[] valueImportance = importance(optional(root, V_IMPORTANCE), V_IMPORTANCE, layerCount);
        checkModel(model, layerCount, groupSize);
        if (!problems.isEmpty()) {
            return null;
        }
        return new QuantPlan(groupSize, layers, modelName, rule, ruleParams, keyImportance, valueImportance);
    }

    private List<LayerQuant> ownLayers(JsonNode node) {
        if (node == null) {
            return null;
        }
        if (!node.isArray()) {
            report(Scope.TOP, LAYERS + "=" + show(node) + ", must be an array of layer objects");
            return null;
        }
        if (node.isEmpty()) {
            report(Scope.TOP, LAYERS + " is empty, a plan needs at least one layer");
            return null;
        }
        List<LayerQuant> layers = new ArrayList<>(node.size());
        for (int i = 0; i < node.size(); i++) {
            layers.add(ownLayer(node.get(i), i));
        }
        return layers;
    }

    private LayerQuant ownLayer(JsonNode node, int index) {
        Scope scope = Scope.layer(index);
        if (!(node instanceof ObjectNode entry)) {
            report(scope, "must be an object, not " + show(node));
            return null;
        }
        rejectUnknownFields(entry, scope, LAYER_FIELDS);
        integer(required(entry, scope, LAYER), scope, LAYER, IntRule.exactly(index, " (its position in \"layers\")"));
        Integer kBits = integer(required(entry, scope, K_BITS), scope, K_BITS, IntRule.BITS);
        Integer vBits = integer(required(entry, scope, V_BITS), scope, V_BITS, IntRule.BITS);
        ResidualPolicy kPolicy = policy(required(entry, scope, K_POLICY), scope, K_POLICY);
        ResidualPolicy vPolicy = policy(required(entry, scope, V_POLICY), scope, V_POLICY);
        Integer sinks = optionalInteger(entry, scope, SINKS, IntRule.NON_NEGATIVE, 0);
        return layer(kBits, kPolicy, vBits, vPolicy, sinks);
    }

    private ResidualPolicy policy(JsonNode node, Scope scope, String field) {
        if (node == null) {
            return null;
        }
        if (!(node instanceof ObjectNode policy)) {
            report(scope, scope.name(field) + "=" + show(node)
                    + ", must be an object such as {\"type\": \"ratio\", \"ratio\": 0.2}");
            return null;
        }
        Scope inner = scope.inside(field);
        JsonNode type = required(policy, inner, POLICY_TYPE);
        if (type == null) {
            return null;
        }
        return switch (type.textValue()) {
            case RATIO -> {
                rejectUnknownFields(policy, inner, List.of(POLICY_TYPE, RATIO));
                yield ratioPolicy(required(policy, inner, RATIO), inner, RATIO);
            }
            case WINDOW -> {
                rejectUnknownFields(policy, inner, List.of(POLICY_TYPE, WINDOW_TOKENS));
                Integer tokens = integer(required(policy, inner, WINDOW_TOKENS), inner, WINDOW_TOKENS,
                        IntRule.NON_NEGATIVE);
                yield tokens == null ? null : new ResidualPolicy.Window(tokens);
            }
            case null, default -> {
                report(inner, inner.name(POLICY_TYPE) + "=" + show(type)
                        + ", must be \"" + RATIO + "\" or \"" + WINDOW + "\"");
                yield null;
            }
        };
    }

    private Map<String, Object> ruleParams(JsonNode node) {
        if (node == null) {
            return null;
        }
        if (!(node instanceof ObjectNode object)) {
            report(Scope.TOP, RULE_PARAMS + "=" + show(node)
                    + ", must be an object of named strings, numbers and booleans");
            return null;
        }
        Map<String, Object> params = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> param : object.properties()) {
            Object value = ruleParam(param.getValue());
            if (value == null) {
                report(Scope.TOP, RULE_PARAMS + "." + param.getKey() + "=" + show(param.getValue())
                        + ", must be a string, a boolean, a 64-bit integer or a finite number");
            } else {
                params.put(param.getKey(), value);
            }
        }
        return params;
    }

    /** The Java value {@link QuantPlan#ruleParams()} holds for a JSON scalar, or null if none fits. */
    private static Object ruleParam(JsonNode value) {
        if (value.isTextual()) {
            return value.textValue();
        }
        if (value.isBoolean()) {
            return value.booleanValue();
        }
        if (value.isIntegralNumber()) {
            return value.canConvertToLong() ? value.longValue() : null;
        }
        if (value.isFloatingPointNumber() && Double.isFinite(value.doubleValue())) {
            return value.doubleValue();
        }
        return null;
    }

    private double[] importance(JsonNode node, String field, Integer layerCount) {
        if (node == null) {
            return null;
        }
        if (!node.isArray()) {
            report(Scope.TOP, field + "=" + show(node) + ", must be an array of numbers, one per layer");
            return null;
        }
        double[] scores = new double[node.size()];
        for (int i = 0; i < scores.length; i++) {
            JsonNode score = node.get(i);
            if (score.isNumber()) {
                scores[i] = score.doubleValue();
            } else {
                report(Scope.TOP, field + "[" + i + "]=" + show(score) + ", must be a number");
            }
        }
        int expectedLength = layerCount == null ? scores.length : layerCount;
        problems.addAll(PlanChecks.importanceProblems(field, scores, expectedLength));
        return scores;
    }

    /**
     * The reference's dict: keys are layer indices "0" .. "L-1" in any order, each entry holds
     * {@code k_bits}, {@code v_bits} and optional residual ratios (the reference's ratio for the
     * width when absent). The group size is the reference's, 32.
     */
    private QuantPlan referencePlan(ObjectNode root, ModelShape model) {
        int layerCount = root.size();
        String expectedKeys = "keys must be exactly 0.." + (layerCount - 1) + " (one per layer)";
        SortedMap<Integer, JsonNode> entries = new TreeMap<>();
        for (Map.Entry<String, JsonNode> entry : root.properties()) {
            String key = entry.getKey();
            if (key.length() > 1 && key.startsWith("0")) {
                report(Scope.TOP, "key \"" + key + "\": layer indices have no leading zeros");
            } else if (key.length() > 9 || Integer.parseInt(key) >= layerCount) {
                report(Scope.TOP, "key \"" + key + "\": layer " + key + " is out of range, " + expectedKeys);
            } else {
                entries.put(Integer.parseInt(key), entry.getValue());
            }
        }
        for (int i = 0; i < layerCount; i++) {
            if (!entries.containsKey(i)) {
                report(Scope.TOP, "layer " + i + " is missing, " + expectedKeys);
            }
        }
        LayerQuant[] layers = new LayerQuant[layerCount];
        entries.forEach((index, entry) -> layers[index] = referenceLayer(entry, index));
        checkModel(model, layerCount, REFERENCE_GROUP_SIZE);
        if (!problems.isEmpty()) {
            return null;
        }
        return new QuantPlan(REFERENCE_GROUP_SIZE, Arrays.asList(layers), null, QuantPlan.RULE_IMPORTED,
                null, null, null);
    }

    private LayerQuant referenceLayer(JsonNode node, int index) {
        Scope scope = Scope.layer(index);
        if (!(node instanceof ObjectNode entry)) {
            report(scope, "must be an object with " + K_BITS + " and " + V_BITS + ", not " + show(node));
            return null;
        }
        rejectUnknownFields(entry, scope, REFERENCE_LAYER_FIELDS);
        Integer kBits = integer(required(entry, scope, K_BITS), scope, K_BITS, IntRule.BITS);
        Integer vBits = integer(required(entry, scope, V_BITS), scope, V_BITS, IntRule.BITS);
        ResidualPolicy kPolicy = referenceRatio(entry, scope, K_RESIDUAL_RATIO, kBits);
        ResidualPolicy vPolicy = referenceRatio(entry, scope, V_RESIDUAL_RATIO, vBits);
        return layer(kBits, kPolicy, vBits, vPolicy, 0);
    }

    /** The file's ratio when it gives one, else the reference's ratio for the width (if valid). */
    private ResidualPolicy referenceRatio(ObjectNode entry, Scope scope, String field, Integer bits) {
        JsonNode node = optional(entry, field);
        if (node != null) {
            return ratioPolicy(node, scope, field);
        }
        return bits == null ? null : ResidualPolicy.Ratio.referenceFor(bits);
    }

    /** A layer from checked parts, or null when any part was bad (already reported). */
    private static LayerQuant layer(Integer kBits, ResidualPolicy kPolicy, Integer vBits, ResidualPolicy vPolicy,
                                    Integer sinks) {
        if (kBits == null || kPolicy == null || vBits == null || vPolicy == null || sinks == null) {
            return null;
        }
        return new LayerQuant(new StreamQuant(BitWidth.of(kBits), kPolicy),
                new StreamQuant(BitWidth.of(vBits), vPolicy), sinks);
    }

    private void checkModel(ModelShape model, Integer layerCount, Integer groupSize) {
        if (model != null) {
            problems.addAll(PlanChecks.modelProblems(layerCount, groupSize, model.layers(), model.headDim()));
        }
    }

    private void rejectUnknownFields(ObjectNode object, Scope scope, List<String> allowed) {
        for (Map.Entry<String, JsonNode> field : object.properties()) {
            if (!allowed.contains(field.getKey())) {
                report(scope, "unknown field \"" + scope.name(field.getKey()) + "\" (expected: "
                        + String.join(", ", allowed) + ")");
            }
        }
    }

    /** The field's value, or null when it is absent (reported as missing). */
    private JsonNode required(ObjectNode object, Scope scope, String field) {
        JsonNode value = object.get(field);
        if (value == null) {
            report(scope, scope.name(field) + " is missing");
        }
        return value;
    }

    /** The field's value, or null when it is absent or JSON null. */
    private static JsonNode optional(ObjectNode object, String field) {
        JsonNode value = object.get(field);
        return value == null || value.isNull() ? null : value;
    }

    private Integer optionalInteger(ObjectNode object, Scope scope, String field, IntRule rule, int absent) {
        JsonNode value = optional(object, field);
        return value == null ? Integer.valueOf(absent) : integer(value, scope, field, rule);
    }

    private Integer integer(JsonNode value, Scope scope, String field, IntRule rule) {
        if (value == null) {
            return null;
        }
        if (!value.isIntegralNumber()) {
            report(scope, scope.name(field) + "=" + show(value) + ", must be " + rule.forType());
            return null;
        }
        if (!value.canConvertToInt() || !rule.accepts().test(value.intValue())) {
            report(scope, scope.name(field) + "=" + show(value) + ", must be " + rule.forValue());
            return null;
        }
        return value.intValue();
    }

    private ResidualPolicy ratioPolicy(JsonNode value, Scope scope, String field) {
        if (value == null) {
            return null;
        }
        if (!value.isNumber()) {
            report(scope, scope.name(field) + "=" + show(value) + ", must be a number in [0, 1]");
            return null;
        }
        double ratio = value.doubleValue();
        if (!(ratio >= 0 && ratio <= 1)) {
            report(scope, scope.name(field) + "=" + show(value) + ", must be in [0, 1]");
            return null;
        }
        return new ResidualPolicy.Ratio(ratio);
    }

    private String text(JsonNode value, Scope scope, String field) {
        if (value == null) {
            return null;
        }
        if (!value.isTextual()) {
            report(scope, scope.name(field) + "=" + show(value) + ", must be a string");
            return null;
        }
        return value.textValue();
    }

    private void report(Scope scope, String text) {
        problems.add(scope.layerLabel() == null ? text : scope.layerLabel() + ": " + text);
    }

    /** A value as JSON text, as the user wrote it (strings quoted), cut when long. */
    private static String show(JsonNode value) {
        String json = value.toString();
        return json.length() <= MAX_SHOWN_CHARS ? json : json.substring(0, MAX_SHOWN_CHARS - 3) + "...";
    }
}
