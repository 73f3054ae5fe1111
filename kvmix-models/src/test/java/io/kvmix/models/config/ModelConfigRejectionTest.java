package io.kvmix.models.config;

import static io.kvmix.models.config.TestConfigs.minimalLlama;
import static io.kvmix.models.config.TestConfigs.minimalMistral;
import static io.kvmix.models.config.TestConfigs.reject;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/** Configs that must be refused, each with the exact message a user would see. */
class ModelConfigRejectionTest {

    private static ObjectNode withFields(ObjectNode node, String fieldsJson) {
        try {
            node.setAll((ObjectNode) TestConfigs.JSON.readTree(fieldsJson));
        } catch (IOException e) {
            throw new IllegalArgumentException(e);
        }
        return node;
    }

    private static void assertRejected(ObjectNode node, String field, String message) {
        ConfigException e = reject(node);
        assertEquals(message, e.getMessage());
        assertEquals(field, e.field());
        assertEquals("config.json", e.source());
    }

    @ParameterizedTest
    @ValueSource(strings = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads"})
    void missingRequiredField(String field) {
        ObjectNode node = minimalLlama();
        node.remove(field);

        assertRejected(node, field, "config.json: required field '" + field + "' is missing");
    }

    @Test
    void nullRequiredField() {
        ObjectNode node = minimalLlama();
        node.putNull("vocab_size");

        assertRejected(node, "vocab_size", "config.json: required field 'vocab_size' is null");
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', quoteCharacter = '`', value = {
            "{\"hidden_size\": \"4096\"}            | hidden_size            | config.json: field 'hidden_size' must be an integer, got string \"4096\"",
            "{\"hidden_size\": 64.0}                | hidden_size            | config.json: field 'hidden_size' must be an integer, got number 64.0",
            "{\"num_hidden_layers\": true}          | num_hidden_layers      | config.json: field 'num_hidden_layers' must be an integer, got boolean true",
            "{\"vocab_size\": 3000000000}           | vocab_size             | config.json: field 'vocab_size' must be a 32-bit integer, got number 3000000000",
            "{\"num_key_value_heads\": [2]}         | num_key_value_heads    | config.json: field 'num_key_value_heads' must be an integer, got an array",
            "{\"head_dim\": \"16\"}                 | head_dim               | config.json: field 'head_dim' must be an integer, got string \"16\"",
            "{\"rope_theta\": \"1e4\"}              | rope_theta             | config.json: field 'rope_theta' must be a number, got string \"1e4\"",
            "{\"rms_norm_eps\": {}}                 | rms_norm_eps           | config.json: field 'rms_norm_eps' must be a number, got an object",
            "{\"tie_word_embeddings\": \"false\"}   | tie_word_embeddings    | config.json: field 'tie_word_embeddings' must be a boolean, got string \"false\"",
            "{\"attention_bias\": 0}                | attention_bias         | config.json: field 'attention_bias' must be a boolean, got number 0",
            "{\"hidden_act\": 1}                    | hidden_act             | config.json: field 'hidden_act' must be a string, got number 1",
            "{\"model_type\": 7}                    | model_type             | config.json: field 'model_type' must be a string, got number 7",
            "{\"architectures\": \"LlamaForCausalLM\"} | architectures      | config.json: field 'architectures' must be an array of strings, got string \"LlamaForCausalLM\"",
            "{\"architectures\": [1]}               | architectures[0]       | config.json: field 'architectures[0]' must be a string, got number 1",
            "{\"torch_dtype\": 16}                  | torch_dtype            | config.json: field 'torch_dtype' must be a string, got number 16",
            "{\"bos_token_id\": \"<s>\"}            | bos_token_id           | config.json: field 'bos_token_id' must be an integer, got string \"<s>\"",
            "{\"eos_token_id\": [2, \"x\"]}         | eos_token_id[1]        | config.json: field 'eos_token_id[1]' must be an integer, got string \"x\"",
            "{\"rope_scaling\": \"linear\"}         | rope_scaling           | config.json: field 'rope_scaling' must be an object, got string \"linear\"",
            "{\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": \"big\"}} | rope_parameters.rope_theta | config.json: field 'rope_parameters.rope_theta' must be a number, got string \"big\"",
            "{\"rope_parameters\": {\"rope_type\": 3}} | rope_parameters.rope_type | config.json: field 'rope_parameters.rope_type' must be a string, got number 3",
            "{\"pretraining_tp\": 1.5}              | pretraining_tp         | config.json: field 'pretraining_tp' must be an integer, got number 1.5"})
    void wrongJsonType(String fields, String field, String message) {
        assertRejected(withFields(minimalLlama(), fields), field, message);
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', quoteCharacter = '`', value = {
            "{\"vocab_size\": 0}               | vocab_size              | config.json: field 'vocab_size' must be positive, got 0",
            "{\"hidden_size\": -64}            | hidden_size             | config.json: field 'hidden_size' must be positive, got -64",
            "{\"intermediate_size\": 0}        | intermediate_size       | config.json: field 'intermediate_size' must be positive, got 0",
            "{\"num_hidden_layers\": 0}        | num_hidden_layers       | config.json: field 'num_hidden_layers' must be positive, got 0",
            "{\"num_attention_heads\": 0}      | num_attention_heads     | config.json: field 'num_attention_heads' must be positive, got 0",
            "{\"num_key_value_heads\": 0}      | num_key_value_heads     | config.json: field 'num_key_value_heads' must be positive, got 0",
            "{\"head_dim\": -16}               | head_dim                | config.json: field 'head_dim' must be positive, got -16",
            "{\"max_position_embeddings\": 0}  | max_position_embeddings | config.json: field 'max_position_embeddings' must be positive, got 0",
            "{\"pretraining_tp\": 0}           | pretraining_tp          | config.json: field 'pretraining_tp' must be positive, got 0",
            "{\"rope_theta\": 0}               | rope_theta              | config.json: field 'rope_theta' must be a positive finite number, got 0.0",
            "{\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": -1}} | rope_parameters.rope_theta | config.json: field 'rope_parameters.rope_theta' must be a positive finite number, got -1.0",
            "{\"rms_norm_eps\": -1e-6}         | rms_norm_eps            | config.json: field 'rms_norm_eps' must be a positive finite number, got -1.0E-6"})
    void nonPositiveValue(String fields, String field, String message) {
        assertRejected(withFields(minimalLlama(), fields), field, message);
    }

    @Test
    void nonPositiveSlidingWindow() {
        assertRejected(withFields(minimalMistral(), "{\"sliding_window\": 0}"), "sliding_window",
                "config.json: field 'sliding_window' must be positive, got 0");
    }

    @Test
    void headsNotDivisibleByKeyValueHeads() {
        assertRejected(withFields(minimalLlama(), "{\"num_attention_heads\": 32, \"num_key_value_heads\": 5, \"head_dim\": 2}"),
                "num_key_value_heads", "config.json: num_attention_heads (32) is not divisible by num_key_value_heads (5)");
    }

    /** Mistral's absent-field default of 8 KV heads is named, since the file never says 8. */
    @Test
    void headsNotDivisibleByMistralDefaultKeyValueHeads() {
        assertRejected(withFields(minimalMistral(), "{\"num_attention_heads\": 4}"), "num_key_value_heads",
                "config.json: num_attention_heads (4) is not divisible by num_key_value_heads "
                        + "(8, the mistral default when the field is absent)");
    }

    @Test
    void hiddenSizeNotDivisibleByHeadsWithoutHeadDim() {
        assertRejected(withFields(minimalLlama(), "{\"hidden_size\": 100, \"num_attention_heads\": 8}"), "hidden_size",
                "config.json: hidden_size (100) is not divisible by num_attention_heads (8) and head_dim is absent");
    }

    @Test
    void oddHeadDim() {
        assertRejected(withFields(minimalLlama(), "{\"head_dim\": 15}"), "head_dim",
                "config.json: head_dim (15) must be even: rotary embeddings rotate pairs of channels");
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', quoteCharacter = '`', value = {
            "{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}} | rope_scaling | config.json: rope_scaling type 'llama3' is not supported",
            "{\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}           | rope_scaling    | config.json: rope_scaling type 'linear' is not supported",
            "{\"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.0}}          | rope_scaling    | config.json: rope_scaling type 'dynamic' is not supported",
            "{\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}        | rope_scaling    | config.json: rope_scaling type 'yarn' is not supported",
            "{\"rope_scaling\": {\"rope_type\": \"longrope\"}}                     | rope_scaling    | config.json: rope_scaling type 'longrope' is not supported",
            "{\"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 8.0}} | rope_parameters | config.json: rope_parameters type 'llama3' is not supported",
            "{\"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 2.0}}   | rope_parameters | config.json: rope_parameters type 'linear' is not supported"})
    void scaledRope(String fields, String field, String message) {
        assertRejected(withFields(minimalLlama(), fields), field, message);
    }

    @Test
    void ropeDictionaryWithScalingKeysButNoType() {
        assertRejected(withFields(minimalLlama(), "{\"rope_scaling\": {\"factor\": 8.0}}"), "rope_scaling.rope_type",
                "config.json: rope_scaling names no rope_type but sets factor");
    }

    /** transformers would silently prefer the dictionary's theta; a contradiction is refused instead. */
    @Test
    void contradictoryRopeTheta() {
        assertRejected(withFields(minimalLlama(),
                        "{\"rope_theta\": 10000, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 500000.0}}"),
                "rope_parameters.rope_theta",
                "config.json: rope_theta (10000.0) and rope_parameters.rope_theta (500000.0) disagree");
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', quoteCharacter = '`', value = {
            "{\"partial_rotary_factor\": 0.5}                                              | partial_rotary_factor                 | config.json: partial_rotary_factor 0.5 is not supported",
            "{\"rope_parameters\": {\"rope_type\": \"default\", \"partial_rotary_factor\": 0.25}} | rope_parameters.partial_rotary_factor | config.json: rope_parameters.partial_rotary_factor 0.25 is not supported"})
    void partialRotary(String fields, String field, String message) {
        assertRejected(withFields(minimalLlama(), fields), field, message);
    }

    @ParameterizedTest
    @ValueSource(strings = {"attention_bias", "mlp_bias"})
    void biases(String field) {
        ObjectNode node = minimalLlama();
        node.put(field, true);

        assertRejected(node, field, "config.json: " + field + "=true is not supported");
    }

    @ParameterizedTest
    @ValueSource(strings = {"gelu", "gelu_pytorch_tanh", "relu", "SiLU"})
    void otherActivations(String act) {
        ObjectNode node = minimalLlama();
        node.put("hidden_act", act);

        assertRejected(node, "hidden_act", "config.json: hidden_act '" + act + "' is not supported (supported: silu)");
    }

    @Test
    void otherModelType() {
        ObjectNode node = minimalLlama();
        node.put("model_type", "qwen2");

        assertRejected(node, "model_type", "config.json: model_type 'qwen2' is not supported (supported: llama, mistral)");
    }

    @Test
    void otherArchitecture() {
        ObjectNode node = minimalLlama();
        node.putArray("architectures").add("LlamaForSequenceClassification");

        assertRejected(node, "architectures", "config.json: architecture 'LlamaForSequenceClassification' is not"
                + " supported (supported: LlamaForCausalLM, MistralForCausalLM)");
    }

    @Test
    void architectureContradictsModelType() {
        ObjectNode node = minimalLlama();
        node.putArray("architectures").add("MistralForCausalLM");

        assertRejected(node, "architectures",
                "config.json: architecture 'MistralForCausalLM' does not match model_type 'llama'");
    }

    @Test
    void architecturesContradictEachOther() {
        ObjectNode node = minimalLlama();
        node.remove("model_type");
        node.putArray("architectures").add("LlamaForCausalLM").add("MistralForCausalLM");

        assertRejected(node, "architectures",
                "config.json: architecture 'MistralForCausalLM' does not match architecture 'LlamaForCausalLM'");
    }

    @Test
    void noModelTypeAtAll() {
        ObjectNode node = minimalLlama();
        node.remove("model_type");

        assertRejected(node, "model_type",
                "config.json: required field 'model_type' is missing (architectures does not name the model either)");
    }

    @ParameterizedTest
    @CsvSource({
            "torch_dtype, float8_e4m3fn",
            "dtype, int8",
            "torch_dtype, torch.float16"})
    void unsupportedDtype(String field, String value) {
        ObjectNode node = minimalLlama();
        node.put(field, value);

        assertRejected(node, field, "config.json: " + field + " '" + value
                + "' is not supported (supported: float16, bfloat16, float32)");
    }

    @Test
    void contradictoryDtypes() {
        assertRejected(withFields(minimalLlama(), "{\"dtype\": \"bfloat16\", \"torch_dtype\": \"float16\"}"), "dtype",
                "config.json: dtype 'bfloat16' and torch_dtype 'float16' disagree");
    }

    @Test
    void quantizedCheckpoint() {
        assertRejected(withFields(minimalLlama(), "{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4}}"),
                "quantization_config",
                "config.json: quantization_config (quant_method 'gptq') is not supported: the checkpoint's weights are quantized");
    }

    @Test
    void malformedJsonNamesLineAndColumn() {
        ConfigException e = reject("{\n  \"model_type\": \"llama\",\n  \"hidden_size\": ,\n}");

        assertTrue(e.getMessage().startsWith("config.json: malformed JSON at line 3, column 18: "), e.getMessage());
        assertNull(e.field());
    }

    @Test
    void duplicateKeyIsMalformed() {
        ConfigException e = reject("{\"hidden_size\": 64,\n \"hidden_size\": 128}");

        assertTrue(e.getMessage().startsWith("config.json: malformed JSON at line 2, column "), e.getMessage());
        assertTrue(e.getMessage().contains("hidden_size"), e.getMessage());
    }

    @Test
    void trailingTextIsMalformed() {
        assertEquals("config.json: malformed JSON at line 1, column 10: unexpected text after the top-level object",
                reject("{\"a\": 1} {}").getMessage());
    }

    /** Jackson's own "[Source: ...]" locations are rewritten so the message stays one readable line. */
    @Test
    void nestedLocationsAreReadable() {
        assertEquals("config.json: malformed JSON at line 1, column 11: Unexpected close marker '}': expected ']'"
                + " (for Array starting at line 1, column 7)", reject("{\"a\": [1,2}").getMessage());
    }

    /** Python's json writes NaN; it may sit in an ignored field, but a used one must be finite. */
    @Test
    void nanInUsedField() {
        String base = minimalLlama().toString();
        assertEquals("config.json: field 'rms_norm_eps' must be a positive finite number, got NaN",
                reject(base.replace("{", "{\"rms_norm_eps\": NaN, ")).getMessage());
        assertEquals("config.json: field 'rope_theta' must be a positive finite number, got Infinity",
                reject(base.replace("{", "{\"rope_theta\": Infinity, ")).getMessage());
        assertEquals("config.json: field 'hidden_size' must be an integer, got number NaN",
                reject(base.replace("\"hidden_size\":64", "\"hidden_size\":NaN")).getMessage());
    }

    @Test
    void emptyText() {
        assertEquals("config.json: malformed JSON: the text is empty", reject("  ").getMessage());
    }

    @Test
    void topLevelNotAnObject() {
        assertEquals("config.json: top level must be a JSON object, got an array", reject("[1, 2]").getMessage());
    }

    @Test
    void fileNotFound(@TempDir Path dir) {
        Path missing = dir.resolve("nope.json");

        ConfigException e = assertThrows(ConfigException.class, () -> ModelConfig.read(missing));

        assertEquals(missing + ": file not found", e.getMessage());
    }

    @Test
    void modelDirectoryWithoutConfig(@TempDir Path dir) {
        ConfigException e = assertThrows(ConfigException.class, () -> ModelConfig.read(dir));

        assertEquals(dir.resolve("config.json") + ": file not found", e.getMessage());
    }

    @Test
    void fileErrorsNameThePath(@TempDir Path dir) throws IOException {
        ObjectNode node = minimalLlama();
        node.remove("hidden_size");
        Path file = dir.resolve("config.json");
        Files.writeString(file, node.toString());

        ConfigException e = assertThrows(ConfigException.class, () -> ModelConfig.read(file));

        assertEquals(file + ": required field 'hidden_size' is missing", e.getMessage());
        assertEquals(file.toString(), e.source());
    }

    @Test
    void fileNotUtf8(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("config.json");
        Files.write(file, new byte[] {'{', (byte) 0xC3, (byte) 0x28, '}'});

        ConfigException e = assertThrows(ConfigException.class, () -> ModelConfig.read(file));

        assertEquals(file + ": not valid UTF-8 text", e.getMessage());
    }
}
