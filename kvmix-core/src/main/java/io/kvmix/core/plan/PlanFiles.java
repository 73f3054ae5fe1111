package io.kvmix.core.plan;

import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.core.util.DefaultPrettyPrinter;
import com.fasterxml.jackson.core.util.Separators;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectWriter;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.databind.node.TextNode;

import java.io.IOException;
import java.nio.charset.CharacterCodingException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.StringJoiner;
import java.util.regex.Pattern;

/**
 * Reads and writes {@link QuantPlan}s as JSON, in two formats (FORMAT.md section 5):
 * <ul>
 *   <li>this library's own format ({@code "format": "kvmix-plan"}), which keeps everything: group
 *       size, per-layer widths, policies and sinks, importance scores and provenance;</li>
 *   <li>the reference implementation's {@code quant_bits} dict, keyed by layer index, which holds
 *       only widths and residual ratios (group size 32).</li>
 * </ul>
 * Reading detects the format. A file is checked completely before any plan is built, so a file
 * with several mistakes reports all of them in one {@link PlanValidationException}, each naming the
 * source, the layer and the field.
 */
public final class PlanFiles {
    /** The value of {@code "format"} that marks this library's own plan files. */
    public static final String FORMAT_NAME = "kvmix-plan";
    /** The own format's version this library writes and reads. */
    public static final int FORMAT_VERSION = 1;
    /** The only group size a reference {@code quant_bits} dict can stand for. */
    public static final int REFERENCE_GROUP_SIZE = 32;

    static final String FORMAT = "format";
    static final String VERSION = "version";
    static final String MODEL = "model";
    static final String GROUP_SIZE = "group_size";
    static final String RULE = "rule";
    static final String RULE_PARAMS = "rule_params";
    static final String LAYERS = "layers";
    static final String K_IMPORTANCE = "k_importance";
    static final String V_IMPORTANCE = "v_importance";
    static final List<String> PLAN_FIELDS = List.of(
            FORMAT, VERSION, MODEL, GROUP_SIZE, RULE, RULE_PARAMS, LAYERS, K_IMPORTANCE, V_IMPORTANCE);

    static final String LAYER = "layer";
    static final String K_BITS = "k_bits";
    static final String V_BITS = "v_bits";
    static final String K_POLICY = "k_policy";
    static final String V_POLICY = "v_policy";
    static final String SINKS = "sinks";
    static final List<String> LAYER_FIELDS = List.of(LAYER, K_BITS, V_BITS, K_POLICY, V_POLICY, SINKS);

    static final String POLICY_TYPE = "type";
    static final String RATIO = "ratio";
    static final String WINDOW = "window";
    static final String WINDOW_TOKENS = "tokens";

    static final String K_RESIDUAL_RATIO = "k_residual_ratio";
    static final String V_RESIDUAL_RATIO = "v_residual_ratio";
    static final List<String> REFERENCE_LAYER_FIELDS = List.of(K_BITS, V_BITS, K_RESIDUAL_RATIO, V_RESIDUAL_RATIO);

    /** Jackson's "[Source: ...; line: 1, column: 1]" inside a message, shortened to its position. */
    private static final Pattern SOURCE_LOCATION = Pattern.compile("\\[Source: .*?; line: (\\d+), column: (\\d+)]");

    private static final String CANNOT_EXPORT = "cannot be written to a quant_bits dict";

    /** Strict: a repeated field is an error, not "last one wins"; nothing may follow the value. */
    private static final JsonMapper MAPPER = JsonMapper.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .build();

    /** One line, with a space after every ':' and ',' and no other whitespace. */
    private static final ObjectWriter ONE_LINE = MAPPER.writer(new DefaultPrettyPrinter(
            Separators.createDefaultInstance()
                    .withObjectFieldValueSpacing(Separators.Spacing.AFTER)
                    .withObjectEntrySpacing(Separators.Spacing.AFTER)
                    .withArrayValueSpacing(Separators.Spacing.AFTER)
                    .withObjectEmptySeparator("")
                    .withArrayEmptySeparator(""))
            .withObjectIndenter(DefaultPrettyPrinter.NopIndenter.instance)
            .withArrayIndenter(DefaultPrettyPrinter.NopIndenter.instance));

    private PlanFiles() {
    }

    /** Reads a plan file in either format; problems are prefixed with the path. */
    public static QuantPlan read(Path path) throws IOException {
        return readJson(readText(path), path.toString());
    }

    /**
     * Reads a plan file in either format and checks it against a model in the same pass, so that
     * mistakes in the file and mismatches with the model are reported together.
     */
    public static QuantPlan read(Path path, int modelLayers, int headDim) throws IOException {
        return readJson(readText(path), path.toString(), modelLayers, headDim);
    }

    /** The file as UTF-8 text; a file that is not UTF-8 is a plan problem that names the file. */
    private static String readText(Path path) throws IOException {
        try {
            return Files.readString(path);
        } catch (CharacterCodingException e) {
            throw new PlanValidationException(path.toString(), List.of("not valid UTF-8 text"));
        }
    }

    /**
     * Parses a plan in either format.
     *
     * @param sourceName prefixes every problem (a file name or "--plan argument"); may be null
     * @throws PlanValidationException listing every problem found
     */
    public static QuantPlan readJson(String json, String sourceName) {
        return PlanReader.read(parseTree(json, sourceName), sourceName, null);
    }

    /** {@link #readJson(String, String)}, also checking the plan against a model's shape. */
    public static QuantPlan readJson(String json, String sourceName, int modelLayers, int headDim) {
        PlanChecks.requireModelShape(modelLayers, headDim);
        return PlanReader.read(parseTree(json, sourceName), sourceName,
                new PlanReader.ModelShape(modelLayers, headDim));
    }

    private static JsonNode parseTree(String json, String sourceName) {
        try {
            return MAPPER.readTree(json);
        } catch (JsonProcessingException e) {
            throw new PlanValidationException(sourceName, List.of(malformedJson(e)));
        }
    }

    private static String malformedJson(JsonProcessingException e) {
        String detail = SOURCE_LOCATION.matcher(e.getOriginalMessage())
                .replaceAll("line $1, column $2")
                .replaceAll("\\s*\\R\\s*", " ");
        JsonLocation at = e.getLocation();
        return at == null
                ? "malformed JSON: " + detail
                : "malformed JSON at line " + at.getLineNr() + ", column " + at.getColumnNr() + ": " + detail;
    }

    /** Writes {@code plan} in the own format: one line per top-level field and per layer. */
    public static void write(QuantPlan plan, Path path) throws IOException {
        Files.writeString(path, toJson(plan));
    }

    /** The own format as text: one line per top-level field and per layer, ending with a newline. */
    public static String toJson(QuantPlan plan) {
        ObjectNode root = MAPPER.createObjectNode();
        root.put(FORMAT, FORMAT_NAME);
        root.put(VERSION, FORMAT_VERSION);
        if (plan.model() != null) {
            root.put(MODEL, plan.model());
        }
        root.put(GROUP_SIZE, plan.groupSize());
        if (plan.rule() != null) {
            root.put(RULE, plan.rule());
        }
        ObjectNode params = root.putObject(RULE_PARAMS);
        plan.ruleParams().forEach((name, value) -> putRuleParam(params, name, value));
        ArrayNode layers = root.putArray(LAYERS);
        for (int i = 0; i < plan.layerCount(); i++) {
            LayerQuant layer = plan.layer(i);
            ObjectNode entry = layers.addObject();
            entry.put(LAYER, i);
            entry.put(K_BITS, layer.keys().bits().bits());
            entry.put(V_BITS, layer.values().bits().bits());
            putPolicy(entry.putObject(K_POLICY), layer.keys().policy());
            putPolicy(entry.putObject(V_POLICY), layer.values().policy());
            entry.put(SINKS, layer.sinks());
        }
        putScores(root, K_IMPORTANCE, plan.keyImportance());
        putScores(root, V_IMPORTANCE, plan.valueImportance());
        return layout(root, LAYERS);
    }

    private static void putRuleParam(ObjectNode params, String name, Object value) {
        switch (value) {
            case String text -> params.put(name, text);
            case Boolean flag -> params.put(name, flag);
            case Long number -> params.put(name, number);
            case Double number -> params.put(name, number);
            default -> throw new IllegalStateException("rule_params." + name + " has type "
                    + value.getClass().getName() + ", which QuantPlan does not allow");
        }
    }

    private static void putPolicy(ObjectNode node, ResidualPolicy policy) {
        switch (policy) {
            case ResidualPolicy.Ratio(double ratio) -> {
                node.put(POLICY_TYPE, RATIO);
                node.put(RATIO, ratio);
            }
            case ResidualPolicy.Window(int tokens) -> {
                node.put(POLICY_TYPE, WINDOW);
                node.put(WINDOW_TOKENS, tokens);
            }
        }
    }

    private static void putScores(ObjectNode root, String field, double[] scores) {
        if (scores != null) {
            ArrayNode array = root.putArray(field);
            for (double score : scores) {
                array.add(score);
            }
        }
    }

    /**
     * Writes {@code plan} as the reference's {@code quant_bits} dict.
     *
     * @throws PlanValidationException naming every layer and field the dict cannot hold
     */
    public static void writeReference(QuantPlan plan, Path path) throws IOException {
        Files.writeString(path, toReferenceJson(plan, path.toString()));
    }

    /** The reference's {@code quant_bits} dict as text, ratios always written out. */
    public static String toReferenceJson(QuantPlan plan) {
        return toReferenceJson(plan, null);
    }

    private static String toReferenceJson(QuantPlan plan, String targetName) {
        List<String> problems = referenceExportProblems(plan);
        if (!problems.isEmpty()) {
            throw new PlanValidationException(targetName, problems);
        }
        ObjectNode root = MAPPER.createObjectNode();
        for (int i = 0; i < plan.layerCount(); i++) {
            LayerQuant layer = plan.layer(i);
            ObjectNode entry = root.putObject(Integer.toString(i));
            entry.put(K_BITS, layer.keys().bits().bits());
            entry.put(V_BITS, layer.values().bits().bits());
            entry.put(K_RESIDUAL_RATIO, ((ResidualPolicy.Ratio) layer.keys().policy()).ratio());
            entry.put(V_RESIDUAL_RATIO, ((ResidualPolicy.Ratio) layer.values().policy()).ratio());
        }
        return layout(root, null);
    }

    /**
     * What a {@code quant_bits} dict cannot say: a group size other than 32, window policies and
     * sinks. Exporting such a plan would silently change how the cache quantizes, so it is refused.
     * Provenance and importance scores are simply not part of the dict and are dropped.
     */
    private static List<String> referenceExportProblems(QuantPlan plan) {
        List<String> problems = new ArrayList<>();
        if (plan.groupSize() != REFERENCE_GROUP_SIZE) {
            problems.add(GROUP_SIZE + "=" + plan.groupSize() + " " + CANNOT_EXPORT
                    + " (it has no group size; readers assume " + REFERENCE_GROUP_SIZE + ")");
        }
        for (int i = 0; i < plan.layerCount(); i++) {
            LayerQuant layer = plan.layer(i);
            windowProblem(i, K_POLICY, layer.keys().policy()).ifPresent(problems::add);
            windowProblem(i, V_POLICY, layer.values().policy()).ifPresent(problems::add);
            if (layer.sinks() != 0) {
                problems.add("layer " + i + ": " + SINKS + "=" + layer.sinks() + " " + CANNOT_EXPORT
                        + " (it has no sinks)");
            }
        }
        return problems;
    }

    private static Optional<String> windowProblem(int layer, String field, ResidualPolicy policy) {
        return policy instanceof ResidualPolicy.Window(int tokens)
                ? Optional.of("layer " + layer + ": " + field + " is a window of " + tokens + " tokens, which "
                        + CANNOT_EXPORT + " (it holds only residual ratios)")
                : Optional.empty();
    }

    /**
     * Lays a plan out as a table: one line per top-level field and, inside {@code rowsField} (may be
     * null), one line per element. A 32-layer plan is then 32 readable, diffable lines instead of
     * several hundred lines of a fully indented tree. Always ends with a newline; '\n' everywhere.
     */
    private static String layout(ObjectNode root, String rowsField) {
        StringJoiner fields = new StringJoiner(",\n", "{\n", "\n}\n");
        for (Map.Entry<String, JsonNode> field : root.properties()) {
            String value = field.getKey().equals(rowsField) ? rows(field.getValue()) : oneLine(field.getValue());
            fields.add("  " + oneLine(TextNode.valueOf(field.getKey())) + ": " + value);
        }
        return fields.toString();
    }

    private static String rows(JsonNode array) {
        StringJoiner rows = new StringJoiner(",\n", "[\n", "\n  ]");
        array.forEach(element -> rows.add("    " + oneLine(element)));
        return rows.toString();
    }

    private static String oneLine(JsonNode value) {
        try {
            return ONE_LINE.writeValueAsString(value);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot serialize a JSON tree built in memory", e);
        }
    }
}
