package io.kvmix.examples;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class MemoryCommandTest {
    static final String LLAMA = "configs/llama-2-7b/config.json";
    static final String MISTRAL = "configs/mistral-7b-v0.1/config.json";
    static final String MIXED_PLAN = "plans/llama-2-7b-k3v4x6-k2v2.json";

    /**
     * Bytes of one stream of one layer after a prefill and single-token decodes, from FORMAT.md alone:
     * the ratio policy on token counts, then blocks x matrix bytes + FP tokens x fp16 row bytes.
     */
    static long formulaBytes(int bits, double ratio, boolean keys, int prefill, int decode, int heads, int d, int g) {
        int blocks = 0;
        int fp = 0;
        for (int step = 0; step <= decode; step++) {
            fp += step == 0 ? prefill : 1;
            int keep = (int) Math.floor(ratio * fp);
            int spill = (fp - keep) / g * g;
            blocks += spill / g;
            fp -= spill;
        }
        int packLength = keys ? d : g;
        int laneLength = keys ? g : d;
        int metaCount = keys ? d : g * (d / Math.min(g, d));
        long matrixBytes = 4L * ((packLength + 31) / 32) * bits * laneLength + 4L * metaCount;
        return blocks * heads * matrixBytes + (long) fp * heads * d * 2;
    }

    @Test
    void llama2MixedPlanBytesAreExactAndAbout4point7x() {
        CliRun run = CliRun.of("memory", "--config", LLAMA, "--plan", MIXED_PLAN, "--prefill", "4096", "--decode", "64",
                "--json");
        assertEquals(0, run.exitCode(), run.err());
        JsonNode json = run.json();
        long expected = 0;
        for (int layer = 0; layer < 32; layer++) {
            boolean important = layer < 4 || layer >= 30;
            expected += formulaBytes(important ? 3 : 2, 0.2, true, 4096, 64, 32, 128, 32);
            expected += formulaBytes(important ? 4 : 2, important ? 0.3 : 0.2, false, 4096, 64, 32, 128, 32);
        }
        assertEquals(expected, json.get("kv_bytes").asLong());
        assertEquals(4160L * 32 * 2 * 32 * 128 * 2, json.get("fp16_bytes").asLong());
        double compression = json.get("compression").asDouble();
        assertTrue(compression > 4.6 && compression < 4.8, "compression " + compression);
        assertEquals((6 * 3 + 26 * 2) / 32.0, json.get("avg_k_bits").asDouble(), 1e-12);
        assertEquals((6 * 4 + 26 * 2) / 32.0, json.get("avg_v_bits").asDouble(), 1e-12);
        assertEquals(json.get("kv_bytes").asLong(), json.get("codes_bytes").asLong() + json.get("metadata_bytes").asLong()
                + json.get("fp_bytes").asLong());
    }

    @Test
    void batchMultipliesAndFp16IsTheBaseline() {
        JsonNode one = CliRun.of("memory", "--config", MISTRAL, "--uniform", "2,2", "--prefill", "300", "--decode", "5",
                "--json").json();
        JsonNode three = CliRun.of("memory", "--config", MISTRAL, "--uniform", "2,2", "--prefill", "300", "--decode", "5",
                "--batch", "3", "--json").json();
        assertEquals(3 * one.get("kv_bytes").asLong(), three.get("kv_bytes").asLong());
        assertEquals(4096, one.get("sliding_window").asInt());
        assertEquals(8, one.get("kv_heads").asInt());
        JsonNode fp16 = CliRun.of("memory", "--config", MISTRAL, "--fp16", "--prefill", "300", "--decode", "5", "--json").json();
        assertEquals(1.0, fp16.get("compression").asDouble(), 0);
        assertEquals(305L * 32 * 2 * 8 * 128 * 2, fp16.get("kv_bytes").asLong());
    }

    @Test
    void policyKnobsChangeTheBytes() {
        long ratio = CliRun.of("memory", "--config", MISTRAL, "--uniform", "2,2", "--prefill", "1000", "--json").json()
                .get("kv_bytes").asLong();
        JsonNode window = CliRun.of("memory", "--config", MISTRAL, "--uniform", "2,2", "--window", "64", "--sinks", "4",
                "--group", "64", "--prefill", "1000", "--json").json();
        // window 64, sinks 4, G 64: 996 FP-eligible tokens, quantize floor(932/64)*64 = 896 (14 blocks) -> 100 FP.
        // keys matrix: 4 runs x 2 words x 64 lanes + 128 (scale, min); values: 2 runs x 2 words x 128 lanes + 64 x 2
        long keysPerLayer = 14L * 8 * (4L * 4 * 2 * 64 + 4 * 128) + 104L * 8 * 128 * 2;
        long valuesPerLayer = 14L * 8 * (4L * 2 * 2 * 128 + 4 * 64 * 2) + 104L * 8 * 128 * 2;
        assertEquals(32 * (keysPerLayer + valuesPerLayer), window.get("kv_bytes").asLong());
        assertTrue(window.get("kv_bytes").asLong() != ratio);
    }

    @Test
    void malformedPlanNamesEveryProblemOnOneLine() {
        CliRun run = CliRun.of("memory", "--config", LLAMA, "--plan", "src/test/resources/plans/malformed.json", "--json");
        assertEquals(1, run.exitCode());
        assertEquals("", run.out());
        String err = run.err().strip();
        assertEquals(1, err.lines().count(), err);
        assertTrue(err.contains("layer 0: k_bits=7, must be 1-4"), err);
        assertTrue(err.contains("layer 5: k_residual_ratio=1.5, must be in [0, 1]"), err);
        assertTrue(err.contains("31 layers") && err.contains("32"), err);
    }

    @Test
    void groupThatDoesNotDivideHeadDimIsRejected(@TempDir Path dir) throws IOException {
        Files.writeString(dir.resolve("config.json"), """
                {"model_type": "llama", "hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 2,
                 "num_attention_heads": 8, "vocab_size": 1000}""");
        CliRun run = CliRun.of("memory", "--model", dir.toString(), "--uniform", "2,2", "--group", "64");
        assertEquals(1, run.exitCode());
        assertTrue(run.err().contains("does not divide head_dim 96"), run.err());
    }

    @Test
    void badConfigIsNamed(@TempDir Path dir) throws IOException {
        Files.writeString(dir.resolve("config.json"), """
                {"model_type": "llama", "hidden_size": "big", "intermediate_size": 2048, "num_hidden_layers": 2,
                 "num_attention_heads": 8, "vocab_size": 1000}""");
        CliRun run = CliRun.of("memory", "--model", dir.toString(), "--fp16");
        assertEquals(1, run.exitCode());
        assertTrue(run.err().contains("config.json") && run.err().contains("hidden_size"), run.err());
        CliRun missing = CliRun.of("memory", "--config", dir.resolve("nope.json").toString(), "--fp16");
        assertEquals(1, missing.exitCode());
        assertTrue(missing.err().contains("nope.json"), missing.err());
    }

    @Test
    void helpListsSubcommandsAndUsageErrorsExitTwo() {
        CliRun help = CliRun.of("--help");
        assertEquals(0, help.exitCode());
        assertTrue(help.out().contains("memory") && help.out().contains("bench"), help.out());
        CliRun usage = CliRun.of("memory", "--uniform", "2,2");
        assertEquals(2, usage.exitCode());
        assertTrue(usage.err().contains("--config") && usage.err().contains("--model"), usage.err());
        CliRun both = CliRun.of("memory", "--config", LLAMA, "--uniform", "2,2", "--fp16");
        assertEquals(2, both.exitCode());
        assertTrue(both.err().contains("mutually exclusive"), both.err());
    }
}
