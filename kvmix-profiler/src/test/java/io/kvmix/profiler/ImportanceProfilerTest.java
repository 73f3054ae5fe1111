package io.kvmix.profiler;

import com.fasterxml.jackson.databind.JsonNode;
import io.kvmix.models.llama.GoldenData;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The autograd graph against the transformers goldens of both bundled models: prompt logits,
 * per-prompt losses, and per-layer k_proj/v_proj gradient norms (issue: relative error < 1%).
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ImportanceProfilerTest {
    private final Map<String, ImportanceProfiler> profilers = new HashMap<>();
    private final Map<String, ProfileResult> results = new HashMap<>();

    @BeforeAll
    void profileBothModels() {
        for (String model : List.of(GoldenData.LLAMA, GoldenData.MISTRAL)) {
            ImportanceProfiler profiler = ImportanceProfiler.open(GoldenData.modelDir(model));
            profilers.put(model, profiler);
            results.put(model, profiler.profile(goldenPrompts(model), ImportanceProfiler.DEFAULT_MAX_LENGTH,
                    ProfileListener.NONE));
        }
    }

    @AfterAll
    void close() {
        profilers.values().forEach(ImportanceProfiler::close);
    }

    private static List<int[]> goldenPrompts(String model) {
        List<int[]> prompts = new ArrayList<>();
        GoldenData.golden(model).get("grad_norms").get("prompts")
                .forEach(prompt -> prompts.add(GoldenData.ints(prompt.get("ids"))));
        return prompts;
    }

    @ParameterizedTest
    @ValueSource(strings = {GoldenData.LLAMA, GoldenData.MISTRAL})
    void logitsMatchTransformers(String model) {
        int vocab = profilers.get(model).config().vocabSize();
        for (JsonNode prompt : GoldenData.golden(model).get("prompt_logits").get("prompts")) {
            int[] ids = GoldenData.ints(prompt.get("ids"));
            float[] expected = GoldenData.goldenTensor(model, prompt.get("tensor").asText());
            float[] actual = profilers.get(model).logits(ids);
            assertEquals(ids.length * vocab, actual.length);
            double maxDiff = 0;
            for (int i = 0; i < expected.length; i++) {
                maxDiff = Math.max(maxDiff, Math.abs(expected[i] - actual[i]));
            }
            System.out.printf("%s %s: autograd logits max |diff| vs transformers = %.2e%n",
                    model, prompt.get("name").asText(), maxDiff);
            assertTrue(maxDiff < 1e-3, model + " " + prompt.get("name").asText() + ": max diff " + maxDiff);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {GoldenData.LLAMA, GoldenData.MISTRAL})
    void perPromptLossesAndNormsMatchTransformers(String model) {
        JsonNode golden = GoldenData.golden(model).get("grad_norms");
        ProfileResult result = results.get(model);
        for (int p = 0; p < golden.get("prompts").size(); p++) {
            JsonNode expected = golden.get("prompts").get(p);
            PromptGradients actual = result.prompts().get(p);
            assertEquals(expected.get("loss").asDouble(), actual.loss(), 1e-4, model + " prompt " + p + " loss");
            assertRelativelyClose(GoldenData.doubles(expected.get("k_norms")), actual.keyNorms(), model + " prompt " + p + " k");
            assertRelativelyClose(GoldenData.doubles(expected.get("v_norms")), actual.valueNorms(), model + " prompt " + p + " v");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {GoldenData.LLAMA, GoldenData.MISTRAL})
    void importanceIsTheMeanOfPerPromptNormsAndMatchesTransformers(String model) {
        JsonNode golden = GoldenData.golden(model).get("grad_norms");
        ProfileResult result = results.get(model);
        double worstK = assertRelativelyClose(GoldenData.doubles(golden.get("k_mean")), result.keyImportance(), model + " k_mean");
        double worstV = assertRelativelyClose(GoldenData.doubles(golden.get("v_mean")), result.valueImportance(), model + " v_mean");
        System.out.printf("%s: importance worst relative error vs transformers: keys %.2e, values %.2e%n",
                model, worstK, worstV);
    }

    /** Every layer's gradient from one backward per prompt: 4 passes for 4 prompts, not 4 x layers. */
    @ParameterizedTest
    @ValueSource(strings = {GoldenData.LLAMA, GoldenData.MISTRAL})
    void oneForwardAndOneBackwardPerPrompt(String model) {
        ProfileResult result = results.get(model);
        int prompts = goldenPrompts(model).size();
        assertEquals(prompts, result.prompts().size());
        assertEquals(prompts, result.forwardPasses());
        assertEquals(prompts, result.backwardPasses());
        int layers = profilers.get(model).config().numHiddenLayers();
        for (PromptGradients gradients : result.prompts()) {
            assertEquals(layers, gradients.keyNorms().length);
            for (int layer = 0; layer < layers; layer++) {
                assertTrue(gradients.keyNorms()[layer] > 0 && gradients.valueNorms()[layer] > 0,
                        "layer " + layer + " got no gradient from the single backward pass");
            }
        }
    }

    @Test
    void gradientsDoNotAccumulateAcrossCalls() {
        ImportanceProfiler profiler = profilers.get(GoldenData.LLAMA);
        List<int[]> prompt = goldenPrompts(GoldenData.LLAMA).subList(0, 1);
        ProfileResult first = profiler.profile(prompt, ImportanceProfiler.DEFAULT_MAX_LENGTH, ProfileListener.NONE);
        ProfileResult second = profiler.profile(prompt, ImportanceProfiler.DEFAULT_MAX_LENGTH, ProfileListener.NONE);
        assertRelativelyClose(first.keyImportance(), second.keyImportance(), "repeat k");
        assertRelativelyClose(first.valueImportance(), second.valueImportance(), "repeat v");
    }

    @Test
    void longPromptsAreTruncatedAndTheListenerSeesEveryPrompt() {
        ImportanceProfiler profiler = profilers.get(GoldenData.LLAMA);
        List<int[]> prompts = goldenPrompts(GoldenData.LLAMA).subList(0, 2);
        List<String> events = new ArrayList<>();
        ProfileResult result = profiler.profile(prompts, 40, new ProfileListener() {
            @Override
            public void started(int count, int layers) {
                events.add("started " + count + " " + layers);
            }

            @Override
            public void promptDone(PromptGradients gradients, int done, int total) {
                events.add("prompt " + gradients.index() + " " + gradients.tokens() + " " + done + "/" + total);
            }
        });
        assertEquals(List.of("started 2 12", "prompt 0 40 1/2", "prompt 1 40 2/2"), events);
        int[] cut = java.util.Arrays.copyOf(prompts.getFirst(), 40);
        ProfileResult explicit = profiler.profile(List.of(cut), 1024, ProfileListener.NONE);
        assertRelativelyClose(explicit.keyImportance(), result.prompts().getFirst().keyNorms(), "truncated k");
    }

    @Test
    void badPromptsAreRejectedByPromptAndPosition() {
        ImportanceProfiler profiler = profilers.get(GoldenData.LLAMA);
        IllegalArgumentException outside = assertThrows(IllegalArgumentException.class,
                () -> profiler.profile(List.of(new int[] {1, 2, 3}, new int[] {5, 3072}), 1024, ProfileListener.NONE));
        assertEquals("prompt 1, position 1: token id 3072 is outside the vocabulary [0, 3072)", outside.getMessage());
        IllegalArgumentException tooShort = assertThrows(IllegalArgumentException.class,
                () -> profiler.profile(List.of(new int[] {7}), 1024, ProfileListener.NONE));
        assertTrue(tooShort.getMessage().startsWith("prompt 0 has 1 token(s)"), tooShort.getMessage());
        assertThrows(IllegalArgumentException.class, () -> profiler.profile(List.of(), 1024, ProfileListener.NONE));
    }

    /** Asserts every element within 1% and returns the worst relative error. */
    private static double assertRelativelyClose(double[] expected, double[] actual, String what) {
        assertEquals(expected.length, actual.length, what + " length");
        double worst = 0;
        for (int i = 0; i < expected.length; i++) {
            double relative = Math.abs(actual[i] - expected[i]) / Math.abs(expected[i]);
            worst = Math.max(worst, relative);
            assertTrue(relative < 0.01, what + " layer " + i + ": expected " + expected[i] + ", got " + actual[i]);
        }
        return worst;
    }
}
