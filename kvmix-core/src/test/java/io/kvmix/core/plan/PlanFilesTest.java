package io.kvmix.core.plan;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** Round trips and format detection; the error reports are in {@link PlanFileProblemsTest}. */
class PlanFilesTest {
    private static final String SOURCE = "plan.json";

    /** Everything the own format can hold: provenance, mixed policies, sinks, importance. */
    private static QuantPlan everything() {
        Map<String, Object> params = new LinkedHashMap<>();
        params.put("k_target_bits", 2.19);
        params.put("v_target_bits", 2.38);
        params.put("prompts", 64);
        params.put("calibration", "wikitext-2 \"train\"");
        params.put("count_metadata", true);
        List<LayerQuant> layers = List.of(
                LayerQuant.reference(3, 4),
                new LayerQuant(StreamQuant.reference(2), StreamQuant.reference(2).withPolicy(new ResidualPolicy.Window(128)), 4),
                new LayerQuant(StreamQuant.reference(1).withPolicy(new ResidualPolicy.Ratio(0.123456789)),
                        StreamQuant.reference(2), 0));
        return new QuantPlan(64, layers, "meta-llama/Llama-2-7b-hf", "budget", params,
                new double[] {0.012345678901234, 3.5e-7, 1234.5}, new double[] {1.0 / 3, 0, 2.0 / 3});
    }

    @Test
    void ownFormatRoundTripKeepsEverythingExactly() {
        QuantPlan plan = everything();
        String json = PlanFiles.toJson(plan);
        QuantPlan read = PlanFiles.readJson(json, SOURCE);
        assertEquals(plan, read);
        assertArrayEquals(plan.keyImportance(), read.keyImportance());
        assertArrayEquals(plan.valueImportance(), read.valueImportance());
        assertEquals(plan.ruleParams(), read.ruleParams());
        assertEquals(List.copyOf(plan.ruleParams().keySet()), List.copyOf(read.ruleParams().keySet()));
        assertEquals(json, PlanFiles.toJson(read));
    }

    @Test
    void ownFormatIsOneLinePerFieldAndPerLayer() {
        QuantPlan plan = new QuantPlan(32,
                List.of(LayerQuant.reference(3, 4), LayerQuant.reference(2, 2).withPolicy(new ResidualPolicy.Window(128)).withSinks(4)),
                "tiny-llama", "tiers", Map.of("important", 1), new double[] {2.5, 0.5}, new double[] {1.0, 0.25});
        assertEquals("""
                {
                  "format": "kvmix-plan",
                  "version": 1,
                  "model": "tiny-llama",
                  "group_size": 32,
                  "rule": "tiers",
                  "rule_params": {"important": 1},
                  "layers": [
                    {"layer": 0, "k_bits": 3, "v_bits": 4, "k_policy": {"type": "ratio", "ratio": 0.2}, \
                "v_policy": {"type": "ratio", "ratio": 0.3}, "sinks": 0},
                    {"layer": 1, "k_bits": 2, "v_bits": 2, "k_policy": {"type": "window", "tokens": 128}, \
                "v_policy": {"type": "window", "tokens": 128}, "sinks": 4}
                  ],
                  "k_importance": [2.5, 0.5],
                  "v_importance": [1.0, 0.25]
                }
                """, PlanFiles.toJson(plan));
    }

    @Test
    void absentProvenanceIsLeftOutAndReadBackAsAbsent() {
        QuantPlan plan = new QuantPlan(32, List.of(LayerQuant.reference(2, 2)));
        assertEquals("""
                {
                  "format": "kvmix-plan",
                  "version": 1,
                  "group_size": 32,
                  "rule_params": {},
                  "layers": [
                    {"layer": 0, "k_bits": 2, "v_bits": 2, "k_policy": {"type": "ratio", "ratio": 0.2}, \
                "v_policy": {"type": "ratio", "ratio": 0.2}, "sinks": 0}
                  ]
                }
                """, PlanFiles.toJson(plan));
        assertEquals(plan, PlanFiles.readJson(PlanFiles.toJson(plan), SOURCE));
    }

    @Test
    void optionalFieldsTakeTheirDefaults() {
        QuantPlan plan = PlanFiles.readJson("""
                {"format": "kvmix-plan", "version": 1, "model": null, "rule": null,
                 "layers": [{"layer": 0, "k_bits": 2, "v_bits": 4,
                             "k_policy": {"type": "ratio", "ratio": 0.2}, "v_policy": {"type": "window", "tokens": 64}}],
                 "k_importance": null}
                """, SOURCE);
        assertEquals(QuantPlan.DEFAULT_GROUP_SIZE, plan.groupSize());
        assertEquals(0, plan.layer(0).sinks());
        assertNull(plan.model());
        assertNull(plan.rule());
        assertEquals(Map.of(), plan.ruleParams());
        assertNull(plan.keyImportance());
        assertEquals(new ResidualPolicy.Window(64), plan.layer(0).values().policy());
    }

    @Test
    void referenceImportWithRatios() {
        QuantPlan plan = PlanFiles.readJson("""
                {"1": {"k_bits": 2, "v_bits": 2, "k_residual_ratio": 0.15, "v_residual_ratio": 0.25},
                 "0": {"k_bits": 3, "v_bits": 4, "k_residual_ratio": 0.2, "v_residual_ratio": 0.3}}
                """, SOURCE);
        assertEquals(new QuantPlan(32, List.of(
                LayerQuant.reference(3, 4),
                new LayerQuant(StreamQuant.reference(2).withPolicy(new ResidualPolicy.Ratio(0.15)),
                        StreamQuant.reference(2).withPolicy(new ResidualPolicy.Ratio(0.25)), 0)),
                null, QuantPlan.RULE_IMPORTED, null, null, null), plan);
    }

    @Test
    void referenceImportWithoutRatiosUsesTheReferenceRatioOfEachWidth() {
        QuantPlan plan = PlanFiles.readJson("""
                {"0": {"k_bits": 4, "v_bits": 3}, "1": {"k_bits": 2, "v_bits": 1},
                 "2": {"k_bits": 1, "v_bits": 4, "v_residual_ratio": null}, "3": {"k_bits": 2, "v_bits": 2, "v_residual_ratio": 0.5}}
                """, SOURCE);
        assertEquals(List.of(
                LayerQuant.reference(4, 3),
                LayerQuant.reference(2, 1),
                LayerQuant.reference(1, 4),
                new LayerQuant(StreamQuant.reference(2), StreamQuant.reference(2).withPolicy(new ResidualPolicy.Ratio(0.5)), 0)),
                plan.layers());
        assertEquals(new ResidualPolicy.Ratio(0.3), plan.layer(0).keys().policy());
        assertEquals(new ResidualPolicy.Ratio(0.1), plan.layer(1).values().policy());
        assertEquals(32, plan.groupSize());
        assertEquals(QuantPlan.RULE_IMPORTED, plan.rule());
    }

    @Test
    void referenceExportWritesEveryRatio() {
        QuantPlan plan = new QuantPlan(32, List.of(LayerQuant.reference(3, 4),
                new LayerQuant(StreamQuant.reference(2).withPolicy(new ResidualPolicy.Ratio(0.15)), StreamQuant.reference(1), 0)));
        String json = PlanFiles.toReferenceJson(plan);
        assertEquals("""
                {
                  "0": {"k_bits": 3, "v_bits": 4, "k_residual_ratio": 0.2, "v_residual_ratio": 0.3},
                  "1": {"k_bits": 2, "v_bits": 1, "k_residual_ratio": 0.15, "v_residual_ratio": 0.1}
                }
                """, json);
        QuantPlan read = PlanFiles.readJson(json, SOURCE);
        assertEquals(plan.layers(), read.layers());
        assertEquals(json, PlanFiles.toReferenceJson(read));
    }

    /** The dict has no place for provenance or importance: they are dropped, not refused. */
    @Test
    void referenceExportDropsProvenance() {
        QuantPlan plan = new QuantPlan(32, List.of(LayerQuant.reference(2, 2)), "m", "tiers", Map.of("x", 1),
                new double[] {1}, new double[] {2});
        QuantPlan read = PlanFiles.readJson(PlanFiles.toReferenceJson(plan), SOURCE);
        assertEquals(new QuantPlan(32, plan.layers(), null, QuantPlan.RULE_IMPORTED, null, null, null), read);
    }

    @Test
    void referenceExportRefusesWhatTheDictCannotHoldNamingEachLayerAndField() {
        QuantPlan plan = QuantPlan.uniform(3, 2, 2, 64)
                .withResidualWindow(128)
                .withSinks(4);
        PlanValidationException e = assertThrows(PlanValidationException.class, () -> PlanFiles.toReferenceJson(plan));
        String window = " is a window of 128 tokens, which cannot be written to a quant_bits dict (it holds only residual ratios)";
        String sinks = ": sinks=4 cannot be written to a quant_bits dict (it has no sinks)";
        assertEquals(List.of(
                "group_size=64 cannot be written to a quant_bits dict (it has no group size; readers assume 32)",
                "layer 0: k_policy" + window, "layer 0: v_policy" + window, "layer 0" + sinks,
                "layer 1: k_policy" + window, "layer 1: v_policy" + window, "layer 1" + sinks,
                "layer 2: k_policy" + window, "layer 2: v_policy" + window, "layer 2" + sinks), e.problems());

        QuantPlan oneWindow = new QuantPlan(32, List.of(LayerQuant.reference(2, 2),
                new LayerQuant(StreamQuant.reference(2), StreamQuant.reference(2).withPolicy(new ResidualPolicy.Window(64)), 0)));
        assertEquals(List.of("layer 1: v_policy is a window of 64 tokens, which cannot be written to a quant_bits dict"
                        + " (it holds only residual ratios)"),
                assertThrows(PlanValidationException.class, () -> PlanFiles.toReferenceJson(oneWindow)).problems());
    }

    @Test
    void filesRoundTripInBothFormatsAndAreDetected(@TempDir Path dir) throws IOException {
        Path own = dir.resolve("plan.json");
        Path reference = dir.resolve("quant_bits.json");
        QuantPlan plan = everything();
        PlanFiles.write(plan, own);
        assertEquals(plan, PlanFiles.read(own));

        QuantPlan imported = QuantPlan.uniform(4, 3, 4, 32);
        PlanFiles.writeReference(imported, reference);
        QuantPlan read = PlanFiles.read(reference);
        assertEquals(imported.layers(), read.layers());
        assertEquals(QuantPlan.RULE_IMPORTED, read.rule());
        assertEquals(PlanFiles.toReferenceJson(imported), Files.readString(reference));
    }

    @Test
    void formatIsDetectedFromTheContentNotTheName() {
        String own = PlanFiles.toJson(QuantPlan.uniform(2, 2, 2, 32));
        String reference = PlanFiles.toReferenceJson(QuantPlan.uniform(2, 2, 2, 32));
        assertEquals(QuantPlan.RULE_UNIFORM, PlanFiles.readJson(own, "quant_bits.json").rule());
        assertEquals(QuantPlan.RULE_IMPORTED, PlanFiles.readJson(reference, "plan.json").rule());
        assertEquals(PlanFiles.readJson(own, null).layers(), PlanFiles.readJson(reference, null).layers());
    }

    @Test
    void writeReferenceNamesTheTargetFile(@TempDir Path dir) {
        Path target = dir.resolve("quant_bits.json");
        PlanValidationException e = assertThrows(PlanValidationException.class,
                () -> PlanFiles.writeReference(QuantPlan.uniform(1, 2, 2, 32).withSinks(1), target));
        assertEquals(target + ": layer 0: sinks=1 cannot be written to a quant_bits dict (it has no sinks)", e.getMessage());
        assertFalse(Files.exists(target));
    }

    @Test
    void readingAgainstAModelAcceptsAFittingPlan(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("plan.json");
        PlanFiles.write(QuantPlan.uniform(32, 2, 2, 32), file);
        assertEquals(32, PlanFiles.read(file, 32, 128).layerCount());
    }
}
