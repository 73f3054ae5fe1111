package io.kvmix.core.plan;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** Every way a plan file can be wrong is reported, all at once, naming the file, layer and field. */
class PlanFileProblemsTest {
    private static final String SOURCE = "plan.json";
    private static final String PLAN_FIELDS =
            "(expected: format, version, model, group_size, rule, rule_params, layers, k_importance, v_importance)";
    private static final String LAYER_FIELDS = "(expected: layer, k_bits, v_bits, k_policy, v_policy, sinks)";
    private static final String REFERENCE_FIELDS = "(expected: k_bits, v_bits, k_residual_ratio, v_residual_ratio)";
    private static final String GOOD_LAYER = """
            {"layer": %d, "k_bits": 2, "v_bits": 2, "k_policy": {"type": "ratio", "ratio": 0.2}, \
            "v_policy": {"type": "ratio", "ratio": 0.2}}""";

    private static List<String> problems(String json) {
        return assertThrows(PlanValidationException.class, () -> PlanFiles.readJson(json, SOURCE)).problems();
    }

    private static String onlyMessage(String json) {
        PlanValidationException e = assertThrows(PlanValidationException.class, () -> PlanFiles.readJson(json, SOURCE));
        assertEquals(1, e.problems().size(), e.getMessage());
        return e.getMessage();
    }

    /** An own-format file whose layers are {@code layers} (JSON objects, comma-separated). */
    private static String ownPlan(String layers) {
        return "{\"format\": \"kvmix-plan\", \"version\": 1, \"layers\": [" + layers + "]}";
    }

    @Test
    void malformedJsonGivesLineAndColumn() {
        assertEquals("plan.json: malformed JSON at line 4, column 3: Unexpected character ('\"' (code 34)):"
                + " was expecting comma to separate Object entries", onlyMessage("""
                {
                  "format": "kvmix-plan",
                  "version": 1
                  "layers": []
                }
                """));
        assertEquals("plan.json: malformed JSON at line 2, column 15: Unexpected end-of-input within/between Object"
                + " entries", onlyMessage("{\n  \"format\": 1,"));
        assertEquals("plan.json: malformed JSON at line 1, column 2: Unexpected end-of-input: expected close marker"
                + " for Object (start marker at line 1, column 1)", onlyMessage("{"));
        assertEquals("plan.json: malformed JSON at line 1, column 49: Duplicate field 'version'",
                onlyMessage("{\"format\": \"kvmix-plan\", \"version\": 1, \"version\": 1, \"layers\": []}"));
        assertEquals("plan.json: malformed JSON at line 1, column 4: Unrecognized token 'x': was expecting"
                + " (JSON String, Number, Array, Object or token 'null', 'true' or 'false')", onlyMessage("{} x"));
    }

    @Test
    void somethingOtherThanAPlanIsNamed() {
        assertEquals("plan.json: no JSON value (the input is empty)", onlyMessage(" \n"));
        assertEquals("plan.json: top-level value is [1,2], must be a JSON object (a kvmix plan or a quant_bits dict)",
                onlyMessage("[1, 2]"));
        assertEquals("plan.json: top-level value is \"kvmix-plan\", must be a JSON object (a kvmix plan or a quant_bits"
                + " dict)", onlyMessage("\"kvmix-plan\""));
        assertEquals("plan.json: empty JSON object: neither a kvmix plan (no \"format\") nor a quant_bits dict"
                + " (no layers)", onlyMessage("{}"));
        assertEquals("plan.json: unknown format: no \"format\": \"kvmix-plan\" field, and key \"k_bits\" is not a layer"
                + " index as in a quant_bits dict", onlyMessage("{\"0\": {\"k_bits\": 2, \"v_bits\": 2}, \"k_bits\": 2}"));
        assertEquals(List.of("format=\"kvmix\", must be \"kvmix-plan\"", "version=2, must be 1 (the version this"
                        + " library reads)"),
                problems("{\"format\": \"kvmix\", \"version\": 2, \"layers\": [" + GOOD_LAYER.formatted(0) + "]}"));
        assertEquals(List.of("format=1, must be \"kvmix-plan\"", "version is missing", "layers is missing"),
                problems("{\"format\": 1}"));
    }

    @Test
    void wrongTypeNamesLayerFieldAndValue() {
        assertEquals("plan.json: layer 2: k_bits=\"x\", must be an integer 1-4", onlyMessage(ownPlan(
                GOOD_LAYER.formatted(0) + ", " + GOOD_LAYER.formatted(1) + ", "
                        + GOOD_LAYER.formatted(2).replace("\"k_bits\": 2", "\"k_bits\": \"x\""))));
    }

    @Test
    void everyProblemOfAnOwnFormatFileIsReportedAtOnce() {
        String json = """
                {
                  "format": "kvmix-plan",
                  "version": 2,
                  "model": 7,
                  "grup_size": 64,
                  "group_size": 48,
                  "rule_params": {"ok": 1, "nested": {"a": 1}},
                  "layers": [
                    {"layer": 0, "k_bits": 7, "v_bits": 4, "k_policy": {"type": "ratio", "ratio": 0.2}, "v_policy": {"type": "ratio", "ratio": 0.3}},
                    {"layer": 1, "k_bit": 2, "v_bits": 2, "k_policy": {"type": "ratio", "ratio": 0.2}, "v_policy": {"type": "ratio", "ratio": 0.2}, "sinks": -1},
                    {"layer": 2, "k_bits": "x", "v_bits": 2.0, "k_policy": {"type": "fixed", "ratio": 0.2}, "v_policy": {"type": "window", "tokens": 1.5}},
                    {"layer": 4, "k_bits": 2, "v_bits": 2, "k_policy": {"type": "ratio", "ratio": 1.5}, "v_policy": {"type": "window", "tokens": -1, "ratio": 0.1}},
                    {"layer": 4, "k_bits": 2, "v_bits": null, "k_policy": {"ratio": 0.2}, "v_policy": 0.2},
                    [1, 2]
                  ],
                  "k_importance": [1, 2, "3"],
                  "v_importance": {"0": 1}
                }
                """;
        List<String> expected = List.of(
                "unknown field \"grup_size\" " + PLAN_FIELDS,
                "version=2, must be 1 (the version this library reads)",
                "model=7, must be a string",
                "group_size=48, must be a positive multiple of 32",
                "rule_params.nested={\"a\":1}, must be a string, a boolean, a 64-bit integer or a finite number",
                "layer 0: k_bits=7, must be 1-4",
                "layer 1: unknown field \"k_bit\" " + LAYER_FIELDS,
                "layer 1: k_bits is missing",
                "layer 1: sinks=-1, must be >= 0",
                "layer 2: k_bits=\"x\", must be an integer 1-4",
                "layer 2: v_bits=2.0, must be an integer 1-4",
                "layer 2: k_policy.type=\"fixed\", must be \"ratio\" or \"window\"",
                "layer 2: v_policy.tokens=1.5, must be an integer >= 0",
                "layer 3: layer=4, must be 3 (its position in \"layers\")",
                "layer 3: k_policy.ratio=1.5, must be in [0, 1]",
                "layer 3: unknown field \"v_policy.ratio\" (expected: type, tokens)",
                "layer 3: v_policy.tokens=-1, must be >= 0",
                "layer 4: v_bits=null, must be an integer 1-4",
                "layer 4: k_policy.type is missing",
                "layer 4: v_policy=0.2, must be an object such as {\"type\": \"ratio\", \"ratio\": 0.2}",
                "layer 5: must be an object, not [1,2]",
                "k_importance[2]=\"3\", must be a number",
                "k_importance has 3 entries, plan has 6 layers",
                "v_importance={\"0\":1}, must be an array of numbers, one per layer");
        PlanValidationException e = assertThrows(PlanValidationException.class, () -> PlanFiles.readJson(json, SOURCE));
        assertEquals(expected, e.problems());
        assertEquals(String.join("\n", expected.stream().map(problem -> SOURCE + ": " + problem).toList()),
                e.getMessage());
        assertEquals(SOURCE, e.source());
    }

    @Test
    void policyAndProvenanceShapesAreChecked() {
        assertEquals(List.of(
                        "rule=[\"tiers\"], must be a string",
                        "rule_params=[1], must be an object of named strings, numbers and booleans",
                        "layer 0: k_policy.type=3, must be \"ratio\" or \"window\"",
                        "layer 0: v_policy.ratio is missing",
                        "k_importance=1.5, must be an array of numbers, one per layer"),
                problems("""
                        {"format": "kvmix-plan", "version": 1, "rule": ["tiers"], "rule_params": [1],
                         "layers": [{"layer": 0, "k_bits": 2, "v_bits": 2, "k_policy": {"type": 3},
                                     "v_policy": {"type": "ratio"}}],
                         "k_importance": 1.5}
                        """));
        assertEquals(List.of("layers is empty, a plan needs at least one layer"), problems(ownPlan("")));
        assertEquals(List.of("layers={\"0\":{}}, must be an array of layer objects"),
                problems("{\"format\": \"kvmix-plan\", \"version\": 1, \"layers\": {\"0\": {}}}"));
        assertEquals(List.of("layer 0: layer=\"0\", must be the integer 0 (its position in \"layers\")"),
                problems(ownPlan(GOOD_LAYER.formatted(0).replace("\"layer\": 0", "\"layer\": \"0\""))));
        assertEquals(List.of("group_size=\"32\", must be a positive multiple of 32"),
                problems("{\"format\": \"kvmix-plan\", \"version\": 1, \"group_size\": \"32\", \"layers\": ["
                        + GOOD_LAYER.formatted(0) + "]}"));
    }

    @Test
    void longValuesAreCutInMessages() {
        String longModel = "x".repeat(100);
        assertEquals(List.of("model=[\"" + "x".repeat(55) + "..., must be a string"),
                problems("{\"format\": \"kvmix-plan\", \"version\": 1, \"model\": [\"" + longModel + "\"], \"layers\": ["
                        + GOOD_LAYER.formatted(0) + "]}"));
    }

    @Test
    void everyProblemOfAReferenceDictIsReportedAtOnce() {
        String json = """
                {
                  "0": {"k_bits": 3, "v_bits": 4, "k_residual_ratio": 0.2, "v_residual_ratio": 1.5},
                  "2": {"k_bits": 7, "v_bits": "4", "k_residual_ratio": "0.2"},
                  "03": {"k_bits": 2, "v_bits": 2},
                  "9": {"k_bits": 2, "v_bits": 2},
                  "4": [2, 2],
                  "1": {"k_bit": 2, "v_bits": 2, "v_residual": 0.1}
                }
                """;
        assertEquals(List.of(
                "key \"03\": layer indices have no leading zeros",
                "key \"9\": layer 9 is out of range, keys must be exactly 0..5 (one per layer)",
                "layer 3 is missing, keys must be exactly 0..5 (one per layer)",
                "layer 5 is missing, keys must be exactly 0..5 (one per layer)",
                "layer 0: v_residual_ratio=1.5, must be in [0, 1]",
                "layer 1: unknown field \"k_bit\" " + REFERENCE_FIELDS,
                "layer 1: unknown field \"v_residual\" " + REFERENCE_FIELDS,
                "layer 1: k_bits is missing",
                "layer 2: k_bits=7, must be 1-4",
                "layer 2: v_bits=\"4\", must be an integer 1-4",
                "layer 2: k_residual_ratio=\"0.2\", must be a number in [0, 1]",
                "layer 4: must be an object with k_bits and v_bits, not [2,2]"), problems(json));
    }

    @Test
    void hugeLayerKeysAreOutOfRange() {
        assertEquals(List.of("key \"12345678901234567890\": layer 12345678901234567890 is out of range, keys must be"
                        + " exactly 0..1 (one per layer)", "layer 1 is missing, keys must be exactly 0..1 (one per layer)"),
                problems("{\"0\": {\"k_bits\": 2, \"v_bits\": 2}, \"12345678901234567890\": {\"k_bits\": 2, \"v_bits\": 2}}"));
    }

    @Test
    void modelMismatchesAreReportedTogetherWithFileProblems() {
        String json = ownPlan(GOOD_LAYER.formatted(0).replace("\"k_bits\": 2", "\"k_bits\": 7") + ", " + GOOD_LAYER.formatted(1));
        PlanValidationException e = assertThrows(PlanValidationException.class,
                () -> PlanFiles.readJson(json, SOURCE, 32, 80));
        assertEquals(List.of(
                "layer 0: k_bits=7, must be 1-4",
                "plan has 2 layers, model has 32",
                "group_size=32: value group 32 does not divide head_dim 80 (use a group size that divides it, or one"
                        + " >= head_dim)"), e.problems());

        assertEquals(List.of("plan has 2 layers, model has 3"), assertThrows(PlanValidationException.class,
                () -> PlanFiles.readJson("{\"0\": {\"k_bits\": 2, \"v_bits\": 2}, \"1\": {\"k_bits\": 2, \"v_bits\": 2}}",
                        SOURCE, 3, 128)).problems());

        String badGroup = "{\"format\": \"kvmix-plan\", \"version\": 1, \"group_size\": 48, \"layers\": ["
                + GOOD_LAYER.formatted(0) + "]}";
        assertEquals(List.of("group_size=48, must be a positive multiple of 32"), assertThrows(
                PlanValidationException.class, () -> PlanFiles.readJson(badGroup, SOURCE, 1, 80)).problems());

        assertEquals("modelLayers=0, must be > 0", assertThrows(IllegalArgumentException.class,
                () -> PlanFiles.readJson(ownPlan(GOOD_LAYER.formatted(0)), SOURCE, 0, 128)).getMessage());
    }

    @Test
    void fileProblemsArePrefixedWithThePath(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("my plan.json");
        Files.writeString(file, ownPlan(GOOD_LAYER.formatted(0).replace("0.2}}", "1.5}}")));
        PlanValidationException e = assertThrows(PlanValidationException.class, () -> PlanFiles.read(file));
        assertEquals(file + ": layer 0: v_policy.ratio=1.5, must be in [0, 1]", e.getMessage());
        assertEquals(file.toString(), e.source());

        PlanValidationException againstModel = assertThrows(PlanValidationException.class,
                () -> PlanFiles.read(file, 2, 128));
        assertEquals(file + ": layer 0: v_policy.ratio=1.5, must be in [0, 1]\n"
                + file + ": plan has 1 layers, model has 2", againstModel.getMessage());

        assertThrows(NoSuchFileException.class, () -> PlanFiles.read(dir.resolve("missing.json")));
    }

    @Test
    void aFileThatIsNotUtf8IsNamed(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("latin1.json");
        Files.write(file, new byte[] {'{', '"', (byte) 0xE9, '"', ':', '1', '}'});
        assertEquals(file + ": not valid UTF-8 text",
                assertThrows(PlanValidationException.class, () -> PlanFiles.read(file)).getMessage());
    }
}
