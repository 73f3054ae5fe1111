package io.kvmix.models.config;

import static io.kvmix.models.config.TestConfigs.minimalLlama;
import static io.kvmix.models.config.TestConfigs.minimalMistral;
import static io.kvmix.models.config.TestConfigs.parse;
import static io.kvmix.models.config.TestConfigs.resource;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.OptionalInt;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/** Configs that must be accepted: the real ones, every spelling, and the defaults transformers applies. */
class ModelConfigTest {

    @Test
    void llama2_7b() {
        ModelConfig c = ModelConfig.read(resource("llama-2-7b-config.json"));

        assertEquals(ModelType.LLAMA, c.modelType());
        assertEquals(32000, c.vocabSize());
        assertEquals(4096, c.hiddenSize());
        assertEquals(11008, c.intermediateSize());
        assertEquals(32, c.numHiddenLayers());
        assertEquals(32, c.numAttentionHeads());
        assertEquals(32, c.numKeyValueHeads());
        assertEquals(128, c.headDim());
        assertEquals(4096, c.maxPositionEmbeddings());
        assertEquals(10000.0, c.ropeTheta());
        assertEquals(1e-5, c.rmsNormEps());
        assertFalse(c.hasSlidingWindow());
        assertFalse(c.tieWordEmbeddings());
        assertEquals(DType.FLOAT16, c.dtype());
        assertEquals(OptionalInt.of(1), c.bosTokenId());
        assertEquals(List.of(2), c.eosTokenIds());
        assertEquals(OptionalInt.empty(), c.padTokenId());

        assertEquals(1, c.queryGroupSize());
        assertEquals(4096, c.qDim());
        assertEquals(4096, c.kvDim());
        assertEquals(6_738_415_616L, c.parameterCount());
        assertEquals(2 * 6_738_415_616L, c.weightBytes());
    }

    @Test
    void mistral_7b_v0_1() {
        ModelConfig c = ModelConfig.read(resource("mistral-7b-v0.1-config.json"));

        assertEquals(ModelType.MISTRAL, c.modelType());
        assertEquals(32000, c.vocabSize());
        assertEquals(4096, c.hiddenSize());
        assertEquals(14336, c.intermediateSize());
        assertEquals(32, c.numHiddenLayers());
        assertEquals(32, c.numAttentionHeads());
        assertEquals(8, c.numKeyValueHeads());
        assertEquals(128, c.headDim());
        assertEquals(32768, c.maxPositionEmbeddings());
        assertEquals(10000.0, c.ropeTheta());
        assertEquals(1e-5, c.rmsNormEps());
        assertEquals(OptionalInt.of(4096), c.slidingWindow());
        assertTrue(c.hasSlidingWindow());
        assertEquals(DType.BFLOAT16, c.dtype());
        assertEquals(List.of(2), c.eosTokenIds());

        assertEquals(4, c.queryGroupSize());
        assertEquals(4096, c.qDim());
        assertEquals(1024, c.kvDim());
        assertEquals(7_241_732_096L, c.parameterCount());
    }

    @Test
    void readsModelDirectory(@TempDir Path dir) throws IOException {
        Files.copy(resource("mistral-7b-v0.1-config.json"), dir.resolve("config.json"));

        assertEquals(ModelConfig.read(resource("mistral-7b-v0.1-config.json")), ModelConfig.read(dir));
    }

    /** transformers 5 spelling of a Llama-3 config: rope_parameters, explicit head_dim, eos list, dtype. */
    @Test
    void llama3StyleWithRopeParameters() {
        String json = """
                {
                  "architectures": ["LlamaForCausalLM"],
                  "model_type": "llama",
                  "attention_bias": false,
                  "attention_dropout": 0.0,
                  "bos_token_id": 128000,
                  "eos_token_id": [128001, 128008, 128009],
                  "head_dim": 128,
                  "hidden_act": "silu",
                  "hidden_size": 4096,
                  "initializer_range": 0.02,
                  "intermediate_size": 14336,
                  "max_position_embeddings": 8192,
                  "mlp_bias": false,
                  "num_attention_heads": 32,
                  "num_hidden_layers": 32,
                  "num_key_value_heads": 8,
                  "pretraining_tp": 1,
                  "rms_norm_eps": 1e-05,
                  "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
                  "tie_word_embeddings": false,
                  "dtype": "bfloat16",
                  "transformers_version": "5.0.0",
                  "use_cache": true,
                  "vocab_size": 128256
                }
                """;
        ModelConfig c = ModelConfig.parse(json, "config.json");

        assertEquals(500000.0, c.ropeTheta());
        assertEquals(128, c.headDim());
        assertEquals(8, c.numKeyValueHeads());
        assertEquals(1024, c.kvDim());
        assertEquals(8192, c.maxPositionEmbeddings());
        assertEquals(DType.BFLOAT16, c.dtype());
        assertEquals(OptionalInt.of(128000), c.bosTokenId());
        assertEquals(List.of(128001, 128008, 128009), c.eosTokenIds());
        assertTrue(c.isEosToken(128009));
        assertFalse(c.isEosToken(128000));
        assertEquals(8_030_261_248L, c.parameterCount());
    }

    /** Mistral-7B-v0.2 and later write "sliding_window": null: full attention. */
    @Test
    void mistralSlidingWindowNull() {
        ObjectNode node = minimalMistral();
        node.putNull("sliding_window");

        ModelConfig c = parse(node);

        assertFalse(c.hasSlidingWindow());
        assertEquals(OptionalInt.empty(), c.slidingWindow());
    }

    @Test
    void mistralSlidingWindowNumber() {
        ObjectNode node = minimalMistral();
        node.put("sliding_window", 128);

        assertEquals(OptionalInt.of(128), parse(node).slidingWindow());
    }

    /** transformers' Llama attention never windows; a stray sliding_window must not make it. */
    @Test
    void llamaIgnoresSlidingWindow() {
        ObjectNode node = minimalLlama();
        node.put("sliding_window", 128);

        assertFalse(parse(node).hasSlidingWindow());
    }

    @Test
    void llamaDefaults() {
        ModelConfig c = parse(minimalLlama());

        assertEquals(ModelType.LLAMA, c.modelType());
        assertEquals(4, c.numKeyValueHeads());
        assertEquals(16, c.headDim());
        assertEquals(10000.0, c.ropeTheta());
        assertEquals(1e-6, c.rmsNormEps());
        assertEquals(2048, c.maxPositionEmbeddings());
        assertFalse(c.hasSlidingWindow());
        assertFalse(c.tieWordEmbeddings());
        assertEquals(DType.FLOAT32, c.dtype());
        assertEquals(OptionalInt.of(1), c.bosTokenId());
        assertEquals(List.of(2), c.eosTokenIds());
        assertEquals(OptionalInt.empty(), c.padTokenId());
    }

    /** MistralConfig's own defaults differ from Llama's: 8 KV heads, window 4096, 4096 * 32 positions. */
    @Test
    void mistralDefaults() {
        ModelConfig c = parse(minimalMistral());

        assertEquals(ModelType.MISTRAL, c.modelType());
        assertEquals(8, c.numKeyValueHeads());
        assertEquals(4, c.queryGroupSize());
        assertEquals(8, c.headDim());
        assertEquals(OptionalInt.of(4096), c.slidingWindow());
        assertEquals(131072, c.maxPositionEmbeddings());
        assertEquals(10000.0, c.ropeTheta());
        assertEquals(1e-6, c.rmsNormEps());
        assertFalse(c.tieWordEmbeddings());
        assertEquals(DType.FLOAT32, c.dtype());
        assertEquals(OptionalInt.of(1), c.bosTokenId());
        assertEquals(List.of(2), c.eosTokenIds());
    }

    /** An explicit null is transformers' "same as the query heads" for both families. */
    @ParameterizedTest
    @ValueSource(strings = {"llama", "mistral"})
    void keyValueHeadsNullMeansQueryHeads(String modelType) {
        ObjectNode node = modelType.equals("llama") ? minimalLlama() : minimalMistral();
        node.putNull("num_key_value_heads");

        ModelConfig c = parse(node);

        assertEquals(c.numAttentionHeads(), c.numKeyValueHeads());
        assertEquals(1, c.queryGroupSize());
    }

    @Test
    void headDimNullIsDerived() {
        ObjectNode node = minimalLlama();
        node.putNull("head_dim");

        assertEquals(16, parse(node).headDim());
    }

    /** With head_dim given, qDim need not equal hidden_size, nor hidden_size divide by the heads. */
    @Test
    void explicitHeadDimDecouplesFromHiddenSize() {
        ObjectNode node = minimalLlama();
        node.put("hidden_size", 60);
        node.put("num_attention_heads", 8);
        node.put("num_key_value_heads", 2);
        node.put("head_dim", 32);

        ModelConfig c = parse(node);

        assertEquals(32, c.headDim());
        assertEquals(256, c.qDim());
        assertEquals(64, c.kvDim());
        assertEquals(4, c.queryGroupSize());
        assertEquals(1.0 / Math.sqrt(32), c.attentionScale());
    }

    @ParameterizedTest
    @CsvSource({
            "torch_dtype, float16, FLOAT16",
            "torch_dtype, bfloat16, BFLOAT16",
            "torch_dtype, float32, FLOAT32",
            "dtype, float16, FLOAT16",
            "dtype, bfloat16, BFLOAT16",
            "dtype, float32, FLOAT32"})
    void dtypeSpellings(String field, String value, DType expected) {
        ObjectNode node = minimalLlama();
        node.put(field, value);

        assertEquals(expected, parse(node).dtype());
    }

    @Test
    void dtypeAndTorchDtypeMayBothBeGivenWhenEqual() {
        ObjectNode node = minimalLlama();
        node.put("dtype", "bfloat16");
        node.put("torch_dtype", "bfloat16");

        assertEquals(DType.BFLOAT16, parse(node).dtype());
    }

    @Test
    void dtypeNullMeansFloat32() {
        ObjectNode node = minimalLlama();
        node.putNull("torch_dtype");

        assertEquals(DType.FLOAT32, parse(node).dtype());
    }

    @ParameterizedTest
    @ValueSource(strings = {
            "{\"rope_theta\": 250000}",
            "{\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 250000.0}}",
            "{\"rope_parameters\": {\"rope_theta\": 250000.0}}",
            "{\"rope_scaling\": {\"rope_type\": \"default\", \"rope_theta\": 250000.0}}",
            "{\"rope_scaling\": {\"type\": \"default\"}, \"rope_theta\": 250000.0}",
            "{\"rope_scaling\": null, \"rope_theta\": 250000.0}",
            "{\"rope_scaling\": {}, \"rope_theta\": 250000.0}",
            "{\"rope_theta\": 250000, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 250000.0}}"})
    void ropeSpellings(String fields) throws IOException {
        ObjectNode node = minimalLlama();
        node.setAll((ObjectNode) TestConfigs.JSON.readTree(fields));

        assertEquals(250000.0, parse(node).ropeTheta());
    }

    @Test
    void ropeParametersWithoutThetaUsesDefault() {
        ObjectNode node = minimalLlama();
        node.putObject("rope_parameters").put("rope_type", "default");

        assertEquals(10000.0, parse(node).ropeTheta());
    }

    @Test
    void pretrainingTpIsNumericallyTheSameModel() {
        ObjectNode node = minimalLlama();
        node.put("pretraining_tp", 2);

        assertEquals(parse(minimalLlama()), parse(node));
    }

    @Test
    void swishIsSilu() {
        ObjectNode node = minimalLlama();
        node.put("hidden_act", "swish");

        assertEquals(parse(minimalLlama()), parse(node));
    }

    @Test
    void unknownFieldsAreIgnored() {
        ObjectNode node = minimalLlama();
        node.put("use_cache", true);
        node.put("initializer_range", 0.02);
        node.put("attention_dropout", 0.0);
        node.put("transformers_version", "4.31.0.dev0");
        node.putObject("some_future_field").putArray("nested").add(1).add("two");

        assertEquals(parse(minimalLlama()), parse(node));
    }

    @Test
    void nanInIgnoredFieldIsAccepted() {
        String json = minimalLlama().toString().replace("{", "{\"initializer_range\": NaN, ");

        assertEquals(parse(minimalLlama()), ModelConfig.parse(json, "config.json"));
    }

    @Test
    void explicitFalseFlagsAreAccepted() {
        ObjectNode node = minimalLlama();
        node.put("attention_bias", false);
        node.put("mlp_bias", false);
        node.put("partial_rotary_factor", 1.0);

        assertEquals(parse(minimalLlama()), parse(node));
    }

    @Test
    void tiedEmbeddingsHaveNoLmHead() {
        ObjectNode tied = minimalLlama();
        tied.put("tie_word_embeddings", true);

        ModelConfig c = parse(tied);

        assertTrue(c.tieWordEmbeddings());
        assertEquals(parse(minimalLlama()).parameterCount() - 1000L * 64, c.parameterCount());
    }

    @Test
    void tokenIdSpellings() {
        ObjectNode node = minimalLlama();
        node.putNull("bos_token_id");
        node.put("eos_token_id", 7);
        node.put("pad_token_id", -1);

        ModelConfig c = parse(node);

        assertEquals(OptionalInt.empty(), c.bosTokenId());
        assertEquals(List.of(7), c.eosTokenIds());
        assertEquals(OptionalInt.of(-1), c.padTokenId());
    }

    @Test
    void eosNullMeansNoEosToken() {
        ObjectNode node = minimalLlama();
        node.putNull("eos_token_id");

        ModelConfig c = parse(node);

        assertEquals(List.of(), c.eosTokenIds());
        assertFalse(c.isEosToken(2));
    }

    @Test
    void modelTypeFromArchitecturesAlone() {
        ObjectNode node = minimalMistral();
        node.remove("model_type");
        node.putArray("architectures").add("MistralForCausalLM");

        assertEquals(ModelType.MISTRAL, parse(node).modelType());
    }

    @Test
    void eosListIsImmutable() {
        ModelConfig c = parse(minimalLlama());

        assertThrows(UnsupportedOperationException.class, () -> c.eosTokenIds().add(3));
    }

    /** Configs built in code obey the same rules; the message then has no file to name. */
    @Test
    void constructorValidatesWithoutSource() {
        ConfigException e = assertThrows(ConfigException.class, () -> new ModelConfig(ModelType.LLAMA,
                32000, 4096, 11008, 32, 32, 5, 128, 4096, 10000.0, 1e-5, OptionalInt.empty(), false,
                DType.FLOAT16, OptionalInt.of(1), List.of(2), OptionalInt.empty()));

        assertEquals("num_attention_heads (32) is not divisible by num_key_value_heads (5)", e.getMessage());
        assertNull(e.source());
        assertEquals("num_key_value_heads", e.field());
    }

    @Test
    void constructorRejectsSlidingWindowForLlama() {
        ConfigException e = assertThrows(ConfigException.class, () -> new ModelConfig(ModelType.LLAMA,
                32000, 4096, 11008, 32, 32, 32, 128, 4096, 10000.0, 1e-5, OptionalInt.of(4096), false,
                DType.FLOAT16, OptionalInt.of(1), List.of(2), OptionalInt.empty()));

        assertEquals("sliding_window is not supported for model_type 'llama'", e.getMessage());
    }
}
