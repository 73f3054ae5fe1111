package io.kvmix.examples;

import com.fasterxml.jackson.databind.JsonNode;
import io.kvmix.core.plan.PlanFiles;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.examples.cli.JsonOutput;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import javax.imageio.ImageIO;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code ./kvmix profile} and {@code ./kvmix demo} on the bundled tiny Llama, end to end. */
class ProfileCommandTest {
    private static final String MODEL = ModelCommandsTest.MODEL;
    private static final String TEXT = "../src-test-data/data/heldout.txt";

    /** The golden's four calibration prompts as a token-id file (array of arrays). */
    private static Path goldenPrompts(Path dir) throws IOException {
        JsonNode prompts = JsonOutput.MAPPER.readTree(Path.of(ModelCommandsTest.GOLDEN).toFile())
                .get("grad_norms").get("prompts");
        StringBuilder json = new StringBuilder("[");
        for (int p = 0; p < prompts.size(); p++) {
            json.append(p == 0 ? "" : ",").append(prompts.get(p).get("ids"));
        }
        Path file = dir.resolve("prompts.json");
        Files.writeString(file, json.append("]").toString());
        return file;
    }

    private static double[] doubles(JsonNode array) {
        return IntStream.range(0, array.size()).mapToDouble(i -> array.get(i).asDouble()).toArray();
    }

    private static List<Integer> topTwo(double[] scores) {
        return IntStream.range(0, scores.length).boxed()
                .sorted(Comparator.<Integer>comparingDouble(i -> scores[i]).reversed()).limit(2).toList();
    }

    @Test
    void profileMatchesTheGoldensAndWritesPlanAndChart(@TempDir Path dir) throws IOException {
        Path planFile = dir.resolve("plan.json");
        Path chart = dir.resolve("importance.png");
        CliRun run = CliRun.of("profile", "--model", MODEL, "--token-ids", goldenPrompts(dir).toString(),
                "--out", planFile.toString(), "--plot", chart.toString(), "--json");
        assertEquals(0, run.exitCode(), run.err());
        JsonNode result = run.json();
        JsonNode golden = JsonOutput.MAPPER.readTree(Path.of(ModelCommandsTest.GOLDEN).toFile()).get("grad_norms");
        double[] keys = doubles(result.get("k_importance"));
        double[] values = doubles(result.get("v_importance"));
        for (int layer = 0; layer < 12; layer++) {
            assertEquals(golden.get("k_mean").get(layer).asDouble(), keys[layer], 0.01 * keys[layer], "k layer " + layer);
            assertEquals(golden.get("v_mean").get(layer).asDouble(), values[layer], 0.01 * values[layer], "v layer " + layer);
        }
        assertEquals(4, result.get("prompts").asInt());
        assertEquals(4, result.get("backward_passes").asInt());

        QuantPlan plan = PlanFiles.read(planFile, 12, 64);
        assertEquals("tiers", plan.rule());
        assertEquals("tiny-llama-gqa", plan.model());
        assertEquals(keys[0], plan.keyImportance()[0], 1e-12);
        // 12 layers: int(0.1 * 12) = 1 important + 1 general layer per stream get K3 / V4
        for (int layer : topTwo(keys)) {
            assertEquals(3, plan.layer(layer).keys().bits().bits(), "key layer " + layer);
        }
        for (int layer : topTwo(values)) {
            assertEquals(4, plan.layer(layer).values().bits().bits(), "value layer " + layer);
        }
        assertEquals(2 + 2.0 / 12, plan.averageKeyBits(), 1e-12);
        assertEquals(2 + 4.0 / 12, plan.averageValueBits(), 1e-12);
        assertEquals(plan, PlanFiles.readJson(result.get("plan").toString(), "stdout"));

        BufferedImage image = ImageIO.read(chart.toFile());
        assertNotNull(image, "the chart is a PNG");
        assertTrue(image.getWidth() > 200 && image.getHeight() > 100);
    }

    @Test
    void seedFormatWritesTheReferenceDict(@TempDir Path dir) throws IOException {
        Path planFile = dir.resolve("quant_bits.json");
        CliRun run = CliRun.of("profile", "--model", MODEL, "--text", TEXT, "--prompts", "2", "--max-len", "64",
                "--out", planFile.toString(), "--seed-format");
        assertEquals(0, run.exitCode(), run.err());
        assertTrue(run.out().contains("profiled 2 prompt(s)") && run.out().contains("2 forward + 2 backward"), run.out());
        assertTrue(run.err().contains("profile"), "a progress bar on stderr: " + run.err());
        JsonNode dict = JsonOutput.MAPPER.readTree(planFile.toFile());
        assertEquals(12, dict.size());
        JsonNode layer0 = dict.get("0");
        assertTrue(layer0.has("k_bits") && layer0.has("v_bits") && layer0.has("k_residual_ratio")
                && layer0.has("v_residual_ratio"), layer0.toString());
        long keyUpgrades = IntStream.range(0, 12).filter(l -> dict.get(String.valueOf(l)).get("k_bits").asInt() == 3).count();
        assertEquals(2, keyUpgrades);
    }

    @Test
    void budgetRuleMeetsItsTarget(@TempDir Path dir) {
        Path planFile = dir.resolve("plan.json");
        CliRun run = CliRun.of("profile", "--model", MODEL, "--text", TEXT, "--prompts", "1", "--max-len", "64",
                "--rule", "budget", "--k-bits", "2.5", "--v-bits", "3", "--codes-only", "--out", planFile.toString(),
                "--json");
        assertEquals(0, run.exitCode(), run.err());
        JsonNode plan = run.json().get("plan");
        double keyBits = 0;
        double valueBits = 0;
        for (JsonNode layer : plan.get("layers")) {
            keyBits += layer.get("k_bits").asInt();
            valueBits += layer.get("v_bits").asInt();
        }
        assertEquals(2.5, keyBits / 12, 1e-12);
        assertEquals(3.0, valueBits / 12, 1e-12);
        assertEquals("budget", plan.get("rule").asText());
    }

    @Test
    void badOptionsAreNamed() {
        CliRun noTargets = CliRun.of("profile", "--model", MODEL, "--text", TEXT, "--rule", "budget", "--out", "x.json");
        assertEquals(1, noTargets.exitCode());
        assertTrue(noTargets.err().contains("--rule budget needs both --k-bits and --v-bits"), noTargets.err());
        CliRun tiersWithTargets = CliRun.of("profile", "--model", MODEL, "--text", TEXT, "--k-bits", "2", "--out", "x.json");
        assertEquals(1, tiersWithTargets.exitCode());
        assertTrue(tiersWithTargets.err().contains("add --rule budget"), tiersWithTargets.err());
        CliRun badTiers = CliRun.of("profile", "--model", MODEL, "--text", TEXT, "--tier-k-bits", "3,3", "--out", "x.json");
        assertEquals(1, badTiers.exitCode());
        assertTrue(badTiers.err().contains("--tier-k-bits 3,3: expected three widths"), badTiers.err());
        CliRun badBudget = CliRun.of("demo", "--model", MODEL, "--text", TEXT, "--budget", "1.5");
        assertEquals(1, badBudget.exitCode());
        assertTrue(badBudget.err().contains("--budget 1.5: expected average key and value code bits K,V"), badBudget.err());
        CliRun noInput = CliRun.of("profile", "--model", MODEL, "--out", "x.json");
        assertEquals(2, noInput.exitCode());
    }

    @Test
    void demoWritesItsReportAndComparesThePlanWithItsControls(@TempDir Path dir) throws IOException {
        Path outDir = dir.resolve("demo");
        CliRun run = CliRun.of("demo", "--model", MODEL, "--text", TEXT, "--out-dir", outDir.toString(),
                "--windows", "1", "--window", "128", "--prompts", "1", "--max-len", "64", "--random-baselines", "1",
                "--generate", "8", "--json");
        assertEquals(0, run.exitCode(), run.err());
        JsonNode result = run.json();
        JsonNode caches = result.get("caches");
        assertEquals(4, caches.size(), "fp16, plan, least important, one random");
        assertEquals(1.0, caches.get(0).get("compression").asDouble(), 0);
        assertTrue(caches.get(1).get("compression").asDouble() > 2, caches.get(1).toString());
        assertEquals(caches.get(1).get("kv_bytes").asLong(), caches.get(2).get("kv_bytes").asLong(),
                "the same bits on other layers cost the same bytes");
        for (JsonNode cache : caches) {
            assertTrue(cache.get("ppl").asDouble() > 1 && Double.isFinite(cache.get("ppl").asDouble()), cache.toString());
        }
        String report = Files.readString(outDir.resolve("report.md"));
        assertTrue(report.contains("## fp16 cache vs the KVmix plan") && report.contains("## Same bits on other layers"), report);
        assertTrue(report.contains("| KVmix plan (tiers) |"), report);
        assertNotNull(ImageIO.read(outDir.resolve("importance.png").toFile()));
        assertEquals("tiers", PlanFiles.read(outDir.resolve("plan.json")).rule());
    }
}
