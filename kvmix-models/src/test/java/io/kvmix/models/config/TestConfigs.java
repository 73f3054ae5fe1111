package io.kvmix.models.config;

import static org.junit.jupiter.api.Assertions.assertThrows;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.net.URISyntaxException;
import java.nio.file.Path;

/** Small configs to vary field by field, and the real configs copied from Hugging Face. */
final class TestConfigs {
    static final ObjectMapper JSON = new ObjectMapper();
    /** The source name every in-memory parse uses, so expected messages read like the CLI's. */
    static final String SOURCE = "config.json";

    private TestConfigs() {
    }

    /** Only what a Llama config must give, plus model_type: every other field takes its default. */
    static ObjectNode minimalLlama() {
        ObjectNode node = JSON.createObjectNode();
        node.put("model_type", "llama");
        node.put("vocab_size", 1000);
        node.put("hidden_size", 64);
        node.put("intermediate_size", 172);
        node.put("num_hidden_layers", 2);
        node.put("num_attention_heads", 4);
        return node;
    }

    /** Only what a Mistral config must give; 32 heads so that the default of 8 KV heads divides them. */
    static ObjectNode minimalMistral() {
        ObjectNode node = JSON.createObjectNode();
        node.put("model_type", "mistral");
        node.put("vocab_size", 1000);
        node.put("hidden_size", 256);
        node.put("intermediate_size", 688);
        node.put("num_hidden_layers", 2);
        node.put("num_attention_heads", 32);
        return node;
    }

    static ModelConfig parse(ObjectNode node) {
        return ModelConfig.parse(node.toString(), SOURCE);
    }

    static ConfigException reject(ObjectNode node) {
        return reject(node.toString());
    }

    static ConfigException reject(String json) {
        return assertThrows(ConfigException.class, () -> ModelConfig.parse(json, SOURCE));
    }

    /** A test resource as a file path (resources live in target/test-classes). */
    static Path resource(String name) {
        try {
            return Path.of(TestConfigs.class.getResource("/configs/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }
}
