package io.kvmix.models.weights;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.models.config.DType;
import io.kvmix.models.config.ModelConfig;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

/**
 * A tiny Llama with random weights, written as a Hugging Face model directory: 2 layers, hidden
 * 64, 4 query heads and 2 KV heads of 16, MLP 128, vocabulary 100. Tests edit the tensor list
 * (drop one, reshape one, add a bias) before writing, to make each way a checkpoint can be wrong.
 *
 * <p>The tensor names are spelled out here rather than taken from {@link LlamaWeights}, so that
 * the tests check the loader against transformers' names, not against itself.
 */
final class TinyLlama {
    static final int VOCAB = 100;
    static final int HIDDEN = 64;
    static final int INTERMEDIATE = 128;
    static final int LAYERS = 2;
    static final int HEADS = 4;
    static final int KV_HEADS = 2;
    static final int HEAD_DIM = HIDDEN / HEADS;

    private static final ObjectMapper JSON = new ObjectMapper();

    /** A tensor to write: its stored type, shape and (fp32) values. */
    record Weight(DType dtype, long[] shape, float[] values) {
        /** Element {@code i} as a file of {@link #dtype()} stores it. */
        float stored(int i) {
            return SafetensorsWriter.stored(dtype, values[i]);
        }
    }

    private final ObjectNode configJson;
    /** In the order the files will hold them. */
    final Map<String, Weight> weights = new LinkedHashMap<>();
    private final Random random = new Random(42);

    private TinyLlama(String modelType, boolean tied, DType dtype) {
        configJson = JSON.createObjectNode()
                .put("model_type", modelType)
                .put("vocab_size", VOCAB)
                .put("hidden_size", HIDDEN)
                .put("intermediate_size", INTERMEDIATE)
                .put("num_hidden_layers", LAYERS)
                .put("num_attention_heads", HEADS)
                .put("num_key_value_heads", KV_HEADS)
                .put("tie_word_embeddings", tied)
                .put("torch_dtype", dtype.hfName());
        put("model.embed_tokens.weight", dtype, VOCAB, HIDDEN);
        for (int i = 0; i < LAYERS; i++) {
            String layer = "model.layers." + i + ".";
            put(layer + "input_layernorm.weight", dtype, HIDDEN);
            put(layer + "self_attn.q_proj.weight", dtype, HEADS * HEAD_DIM, HIDDEN);
            put(layer + "self_attn.k_proj.weight", dtype, KV_HEADS * HEAD_DIM, HIDDEN);
            put(layer + "self_attn.v_proj.weight", dtype, KV_HEADS * HEAD_DIM, HIDDEN);
            put(layer + "self_attn.o_proj.weight", dtype, HIDDEN, HEADS * HEAD_DIM);
            put(layer + "post_attention_layernorm.weight", dtype, HIDDEN);
            put(layer + "mlp.gate_proj.weight", dtype, INTERMEDIATE, HIDDEN);
            put(layer + "mlp.up_proj.weight", dtype, INTERMEDIATE, HIDDEN);
            put(layer + "mlp.down_proj.weight", dtype, HIDDEN, INTERMEDIATE);
        }
        put("model.norm.weight", dtype, HIDDEN);
        if (!tied) {
            put("lm_head.weight", dtype, VOCAB, HIDDEN);
        }
    }

    /** An untied Llama stored as {@code dtype}. */
    static TinyLlama llama(DType dtype) {
        return new TinyLlama("llama", false, dtype);
    }

    /** A Llama whose LM head is the embedding, with no {@code lm_head.weight} stored. */
    static TinyLlama tiedLlama(DType dtype) {
        return new TinyLlama("llama", true, dtype);
    }

    /** The same shapes as a Mistral (Mistral's checkpoint names are Llama's). */
    static TinyLlama mistral(DType dtype) {
        TinyLlama model = new TinyLlama("mistral", false, dtype);
        model.configJson.put("sliding_window", 32);
        return model;
    }

    /** Adds (or replaces) a tensor of random values. */
    TinyLlama put(String name, DType dtype, long... shape) {
        float[] values = new float[Math.toIntExact(Arrays.stream(shape).reduce(1, Math::multiplyExact))];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (random.nextGaussian() * 0.5);
        }
        weights.put(name, new Weight(dtype, shape, values));
        return this;
    }

    TinyLlama remove(String name) {
        if (weights.remove(name) == null) {
            throw new IllegalArgumentException("no tensor " + name);
        }
        return this;
    }

    ModelConfig config() {
        return ModelConfig.parse(configJson.toString(), ModelConfig.FILE_NAME);
    }

    /** Writes {@code config.json} and {@code model.safetensors} into {@code dir}; returns {@code dir}. */
    Path writeSingle(Path dir) {
        writeConfig(dir);
        writer(new ArrayList<>(weights.keySet())).write(dir.resolve(Checkpoint.SINGLE_FILE));
        return dir;
    }

    /**
     * Writes {@code config.json}, {@code shardCount} shards named as transformers names them, and
     * the index; tensors are dealt to shards in order. Returns {@code dir}.
     */
    Path writeSharded(Path dir, int shardCount) {
        writeConfig(dir);
        List<String> names = new ArrayList<>(weights.keySet());
        ObjectNode index = JSON.createObjectNode();
        index.putObject("metadata").put("total_size", 0);
        ObjectNode weightMap = index.putObject("weight_map");
        int perShard = (names.size() + shardCount - 1) / shardCount;
        for (int shard = 0; shard < shardCount; shard++) {
            String shardName = shardName(shard + 1, shardCount);
            List<String> inShard = names.subList(Math.min(names.size(), shard * perShard),
                    Math.min(names.size(), (shard + 1) * perShard));
            writer(inShard).write(dir.resolve(shardName));
            inShard.forEach(name -> weightMap.put(name, shardName));
        }
        write(dir.resolve(Checkpoint.INDEX_FILE), index.toPrettyString());
        return dir;
    }

    /** {@code model-00002-of-00003.safetensors}. */
    static String shardName(int oneBased, int count) {
        return String.format("model-%05d-of-%05d.safetensors", oneBased, count);
    }

    private SafetensorsWriter writer(List<String> names) {
        SafetensorsWriter writer = new SafetensorsWriter().metadata("format", "pt");
        names.forEach(name -> {
            Weight w = weights.get(name);
            writer.add(name, w.dtype(), w.shape(), w.values());
        });
        return writer;
    }

    private void writeConfig(Path dir) {
        write(dir.resolve(ModelConfig.FILE_NAME), configJson.toPrettyString());
    }

    static void write(Path file, String text) {
        try {
            Files.writeString(file, text);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
