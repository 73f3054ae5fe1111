package io.kvmix.models.readme;

import io.kvmix.core.plan.PlanFiles;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.eval.DecodePerplexity;
import io.kvmix.models.generation.Generator;
import io.kvmix.models.generation.SamplingOptions;
import io.kvmix.models.llama.LlamaModel;
import io.kvmix.models.tokenizer.TextTokenizer;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Runs the model example of the README, and checks the README shows exactly this code. */
class ModelReadmeExampleTest {

    @Test
    void readmeExampleRuns() throws IOException {
        Path modelDir = Path.of("../src-test-data/models/tiny-llama-gqa");
        Path planFile = Path.of("../src-test-data/goldens/plans/tiny-llama-gqa.mixed_k3v4_first3_last.json");
        String heldOutText = Files.readString(Path.of("../src-test-data/data/heldout.txt")).substring(0, 6000);
        // README-MODELS-BEGIN
        try (LlamaModel model = LlamaModel.load(modelDir);
             TextTokenizer tokenizer = TextTokenizer.open(modelDir)) {
            QuantPlan plan = PlanFiles.read(planFile);                       // or QuantPlan.uniform(layers, 2, 2, 32)
            int[] prompt = tokenizer.encodePrompt("The jury said");
            Generator.Generation out = Generator.generate(model, plan, prompt, SamplingOptions.greedy(20),
                    token -> { });                                           // streaming callback per new token
            System.out.println(tokenizer.decode(out.newTokens()) + " (" + out.kvBytes().total() + " KV bytes)");

            int[] ids = tokenizer.encodeText(heldOutText);
            List<int[]> windows = new ArrayList<>();
            for (int start = 0; start + 256 <= ids.length; start += 256) {
                windows.add(Arrays.copyOfRange(ids, start, start + 256));
            }
            DecodePerplexity.Result fp16 = DecodePerplexity.evaluate(model, null, windows, 64, null);
            DecodePerplexity.Result kvmix = DecodePerplexity.evaluate(model, plan, windows, 64, null);
            System.out.printf("decode ppl fp16 %.3f, KVmix %.3f (x%.4f)%n",
                    fp16.perplexity(), kvmix.perplexity(), kvmix.perplexity() / fp16.perplexity());
        }
        // README-MODELS-END
        try (LlamaModel model = LlamaModel.load(modelDir)) {
            assertEquals(12, model.config().numHiddenLayers());
        }
        assertTrue(heldOutText.length() > 1000);
    }

    @Test
    void readmeShowsThisExample() throws IOException {
        ReadmeSnippets.assertReadmeShows(Path.of("src/test/java/io/kvmix/models/readme/ModelReadmeExampleTest.java"), "MODELS");
    }
}
