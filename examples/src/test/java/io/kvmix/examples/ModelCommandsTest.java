package io.kvmix.examples;

import com.fasterxml.jackson.databind.JsonNode;
import io.kvmix.examples.cli.JsonOutput;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code ppl} and {@code generate} on the bundled tiny Llama, end to end through the CLI. */
class ModelCommandsTest {
    static final String MODEL = "../src-test-data/models/tiny-llama-gqa";
    static final String HELDOUT_IDS = "../src-test-data/data/heldout_ids.json";
    static final String GOLDEN = "../src-test-data/goldens/tiny-llama-gqa.json";

    @Test
    void pplReportsTheLiveCacheBytesThatMemoryPredicts() {
        JsonNode ppl = CliRun.of("ppl", "--model", MODEL, "--token-ids", HELDOUT_IDS, "--windows", "1",
                "--uniform", "2,2", "--json").json();
        assertEquals(1, ppl.get("windows").asInt());
        assertEquals(448, ppl.get("predictions").asLong());
        double nll = ppl.get("nll_sum").asDouble();
        assertEquals(Math.exp(nll / 448), ppl.get("ppl").asDouble(), 1e-9);
        // A window: 64 prefilled tokens, then 447 single-token appends (the last token is only predicted).
        JsonNode memory = CliRun.of("memory", "--model", MODEL, "--uniform", "2,2", "--prefill", "64", "--decode", "447",
                "--json").json();
        assertEquals(memory.get("kv_bytes").asLong(), ppl.get("kv_bytes").asLong());
        assertEquals(memory.get("codes_bytes").asLong(), ppl.get("codes_bytes").asLong());
    }

    @Test
    void greedyGenerationMatchesTransformers() throws IOException {
        JsonNode golden = JsonOutput.MAPPER.readTree(Path.of(GOLDEN).toFile()).get("greedy").get("results").get(0);
        Path prompt = Files.createTempFile("prompt", ".json");
        Files.writeString(prompt, golden.get("prompt_ids").toString());
        CliRun run = CliRun.of("generate", "--model", MODEL, "--prompt-ids", prompt.toString(), "--greedy",
                "--max-new", "10", "--json");
        assertEquals(0, run.exitCode(), run.err());
        JsonNode ids = run.json().get("ids");
        assertEquals(10, ids.size());
        for (int i = 0; i < 10; i++) {
            assertEquals(golden.get("new_ids").get(i).asInt(), ids.get(i).asInt(), "token " + i);
        }
        assertTrue(run.json().get("text").asText().startsWith(golden.get("text").asText().substring(0, 5)));
    }

    @Test
    void textPromptStreamsTextAndMinNewHolds() {
        CliRun run = CliRun.of("generate", "--model", MODEL, "--prompt", "The jury said", "--max-new", "12",
                "--min-new", "12", "--seed", "3");
        assertEquals(0, run.exitCode(), run.err());
        assertTrue(run.out().strip().length() > 10, run.out());
        assertTrue(run.err().contains("12 new tokens"), run.err());
    }

    @Test
    void badInputsAreNamed(@TempDir Path dir) throws IOException {
        Path badIds = dir.resolve("ids.json");
        Files.writeString(badIds, "[1, 2, \"x\"]");
        CliRun ids = CliRun.of("generate", "--model", MODEL, "--prompt-ids", badIds.toString());
        assertEquals(1, ids.exitCode());
        assertTrue(ids.err().contains("ids.json[2]") && ids.err().contains("not a token id"), ids.err());

        CliRun window = CliRun.of("ppl", "--model", MODEL, "--token-ids", HELDOUT_IDS, "--window", "64");
        assertEquals(1, window.exitCode());
        assertTrue(window.err().contains("--window 64 must be larger than --prefill 64"), window.err());

        Path longPrompt = dir.resolve("long.json");
        StringBuilder json = new StringBuilder("[");
        for (int i = 0; i < 1030; i++) {
            json.append(i == 0 ? "" : ",").append(5);
        }
        Files.writeString(longPrompt, json.append("]").toString());
        CliRun tooLong = CliRun.of("generate", "--model", MODEL, "--prompt-ids", longPrompt.toString(), "--max-new", "1");
        assertEquals(1, tooLong.exitCode());
        assertTrue(tooLong.err().contains("exceeds max_position_embeddings 1024"), tooLong.err());

        CliRun missing = CliRun.of("ppl", "--model", dir.toString(), "--token-ids", HELDOUT_IDS);
        assertEquals(1, missing.exitCode());
        assertTrue(missing.err().contains("config.json"), missing.err());
    }
}
