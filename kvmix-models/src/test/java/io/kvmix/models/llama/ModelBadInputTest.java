package io.kvmix.models.llama;

import static io.kvmix.models.llama.GoldenData.LLAMA;
import static io.kvmix.models.llama.GoldenData.MISTRAL;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.eval.DecodePerplexity;
import io.kvmix.models.generation.Generator;
import io.kvmix.models.generation.SamplingOptions;
import io.kvmix.models.tokenizer.TextTokenizer;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Pattern;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Input the model cannot serve is refused with a message that names what is wrong, never answered silently. */
class ModelBadInputTest {
    /** Quiet NaN and +infinity as stored by the fp16 (tiny-llama-gqa) and bf16 (tiny-mistral-swa) checkpoints. */
    private static final short FP16_NAN = 0x7E00;
    private static final short FP16_INF = 0x7C00;
    private static final short BF16_NAN = 0x7FC0;
    private static final short BF16_INF = 0x7F80;

    private static LlamaModel llama;

    @BeforeAll
    static void load() {
        llama = LlamaModel.load(GoldenData.modelDir(LLAMA));
    }

    @AfterAll
    static void close() {
        llama.close();
    }

    @Test
    void contextBeyondMaxPositionEmbeddingsIsRefusedByName() {
        int max = llama.config().maxPositionEmbeddings();
        assertEquals(1024, max);
        try (LlamaState state = llama.newState(null)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> llama.forward(state, new int[max + 1], false));
            assertMentions(e, "max_position_embeddings", Integer.toString(max), Integer.toString(max + 1));
            assertEquals(0, state.position(), "a refused step must not advance the state");
        }
        // reaching the limit step by step: the step that would go past it is refused
        try (LlamaState state = llama.newState(QuantPlan.uniform(llama.config().numHiddenLayers(), 2, 2, 32))) {
            llama.forward(state, new int[max - 1], false);
            llama.forward(state, new int[]{5}, false);
            assertEquals(max, state.position());
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> llama.forward(state, new int[]{5}, false));
            assertMentions(e, "max_position_embeddings", Integer.toString(max));
        }
        // through the evaluation API: a prefill past the limit fails before any work
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> DecodePerplexity.evaluate(llama, null, List.of(new int[max + 100]), max + 1, null));
        assertMentions(e, "max_position_embeddings");
    }

    @Test
    void tokenOutsideTheVocabularyIsRefusedWithIdAndPosition() {
        int vocab = llama.config().vocabSize();
        try (LlamaState state = llama.newState(null)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> llama.forward(state, new int[]{5, 6, vocab, 7}, true));
            assertMentions(e, "token id " + vocab, "position 2");
            llama.forward(state, new int[]{5, 6, 7}, false);
            e = assertThrows(IllegalArgumentException.class, () -> llama.forward(state, new int[]{-1}, false));
            assertMentions(e, "token id -1", "position 3");
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Generator.generate(llama, null, new int[]{1, 2, 99999}, SamplingOptions.greedy(4), null));
        assertMentions(e, "99999", "position 2");
        e = assertThrows(IllegalArgumentException.class, () -> DecodePerplexity.evaluate(llama, null,
                List.of(new int[]{1, 2, 3, 4, vocab + 3, 6}), 2, null));
        assertMentions(e, Integer.toString(vocab + 3));
    }

    /**
     * A non-finite weight inside a layer makes the forward pass throw, naming that layer: through
     * the KV cache (keys/values not finite) or the residual-stream check, whichever sees it first;
     * for a prompt and for a one-token decode step, with an fp16 and a K2V2 cache. tiny-llama-gqa
     * stores fp16, tiny-mistral-swa bf16.
     */
    @ParameterizedTest(name = "{0} {1}[{2}] = {4}")
    @CsvSource({
            "tiny-llama-gqa, model.layers.5.self_attn.k_proj.weight, 0, 5, NaN",
            "tiny-llama-gqa, model.layers.3.self_attn.v_proj.weight, 777, 3, NaN",
            "tiny-llama-gqa, model.layers.7.mlp.down_proj.weight, 1000, 7, NaN",
            "tiny-llama-gqa, model.layers.10.self_attn.q_proj.weight, 64, 10, Inf",
            "tiny-llama-gqa, model.layers.0.input_layernorm.weight, 17, 0, NaN",
            "tiny-mistral-swa, model.layers.5.self_attn.k_proj.weight, 0, 5, NaN",
            "tiny-mistral-swa, model.layers.1.self_attn.v_proj.weight, 10, 1, Inf",
            "tiny-mistral-swa, model.layers.6.mlp.down_proj.weight, 1000, 6, Inf",
            "tiny-mistral-swa, model.layers.7.self_attn.q_proj.weight, 64, 7, NaN",
            "tiny-mistral-swa, model.layers.2.post_attention_layernorm.weight, 5, 2, NaN",
    })
    void nonFiniteWeightNamesItsLayer(String model, String tensor, long index, int layer, String what,
                                      @TempDir Path dir) {
        boolean fp16 = model.equals(LLAMA);
        short bits = what.equals("NaN") ? (fp16 ? FP16_NAN : BF16_NAN) : (fp16 ? FP16_INF : BF16_INF);
        Path planted = GoldenData.copyWithPlantedValue(model, dir, tensor, index, bits);
        int[] prompt = {489, 513, 399, 2313, 1262, 713, 1802, 274};
        // "layer 5 keys ...", "layer 7: non-finite activation ...", or a load-time check naming "model.layers.5.*"
        Pattern namesLayer = Pattern.compile("\\blayers?[ .]" + layer + "\\b");
        LlamaModel loaded;
        try {
            loaded = LlamaModel.load(planted);
        } catch (RuntimeException e) {
            // refusing the checkpoint at load time is fine too, if it says where
            assertTrue(e.getMessage() != null && namesLayer.matcher(e.getMessage()).find(),
                    what + " in " + tensor + ": load error should name layer " + layer + ": " + e.getMessage());
            return;
        }
        try (LlamaModel broken = loaded) {
            QuantPlan k2v2 = QuantPlan.uniform(broken.config().numHiddenLayers(), 2, 2, 32);
            for (QuantPlan plan : Arrays.asList(null, k2v2)) {
                for (int[] tokens : List.of(prompt, new int[]{489})) {
                    String step = what + " in " + tensor + ", " + tokens.length + " token(s), "
                            + (plan == null ? "fp16" : "K2V2") + " cache";
                    try (LlamaState state = broken.newState(plan)) {
                        RuntimeException e = assertThrows(RuntimeException.class,
                                () -> broken.forward(state, tokens, false), "no error (a silent answer) for a " + step);
                        String message = e.getMessage();
                        assertTrue(message != null && namesLayer.matcher(message).find(),
                                step + ": message should name layer " + layer + ": " + message);
                        assertTrue(message.contains("non-finite") || message.contains("not finite"),
                                step + ": message should say the value is not finite: " + message);
                    }
                }
            }
        }
    }

    @Test
    void missingTokenizerIsNamed(@TempDir Path dir) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> TextTokenizer.open(dir));
        assertMentions(e, dir.resolve("tokenizer.json").toString());
        Path file = dir.resolve("elsewhere.json");
        e = assertThrows(IllegalArgumentException.class, () -> TextTokenizer.open(file));
        assertMentions(e, file.toString());
    }

    @Test
    void corruptTokenizerIsNamed(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("tokenizer.json"), "{\"model\": 42");
        RuntimeException e = assertThrows(RuntimeException.class, () -> TextTokenizer.open(dir));
        assertMentions(e, dir.resolve("tokenizer.json").toString());
    }

    /** The real tokenizer decodes the golden ids to transformers' texts (both model dirs hold the same file). */
    @Test
    void tokenizerDecodesTheGoldenGreedyText() {
        for (String model : List.of(LLAMA, MISTRAL)) {
            try (TextTokenizer tokenizer = TextTokenizer.open(GoldenData.modelDir(model))) {
                for (var result : GoldenData.golden(model).get("greedy").get("results")) {
                    int[] ids = GoldenData.ints(result.get("new_ids"));
                    assertEquals(result.get("text").asText(), tokenizer.decode(ids), model + " " + result.get("name"));
                }
                for (var prompt : GoldenData.golden(model).get("prompt_logits").get("prompts")) {
                    int[] ids = GoldenData.ints(prompt.get("ids"));
                    assertEquals(prompt.get("text").asText(), tokenizer.decode(ids), model + " " + prompt.get("name"));
                }
            }
        }
    }

    private static void assertMentions(Throwable e, String... parts) {
        String message = e.getMessage();
        for (String part : parts) {
            assertTrue(message != null && message.contains(part), "message should mention '" + part + "': " + message);
        }
    }
}
