package io.kvmix.models.weights;

import static io.kvmix.models.weights.TinyLlama.HIDDEN;
import static io.kvmix.models.weights.TinyLlama.INTERMEDIATE;
import static io.kvmix.models.weights.TinyLlama.VOCAB;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvmix.models.config.ConfigException;
import io.kvmix.models.config.DType;
import io.kvmix.models.config.ModelType;

import java.nio.file.Path;
import java.util.List;
import java.util.function.Function;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Loading a tiny random Llama from single and sharded checkpoints, and every way a checkpoint can disagree. */
class LlamaWeightsTest {
    private static final String K_PROJ_0 = "model.layers.0.self_attn.k_proj.weight";

    @TempDir
    Path dir;

    private static LlamaWeights load(TinyLlama model, Path dir) {
        try (Checkpoint checkpoint = Checkpoint.open(dir)) {
            return LlamaWeights.load(model.config(), checkpoint);
        }
    }

    private static CheckpointException reject(TinyLlama model, Path dir) {
        return assertThrows(CheckpointException.class, () -> load(model, dir));
    }

    /** Every role holds the tensor of the right name, and its values are the ones written. */
    private static void assertHoldsWhatWasWritten(TinyLlama model, LlamaWeights weights) {
        Function<Tensor, Tensor> checked = tensor -> {
            TinyLlama.Weight written = model.weights.get(tensor.name());
            assertArrayEquals(written.shape(), tensor.shape(), tensor.name());
            assertEquals(written.dtype(), tensor.dtype(), tensor.name());
            for (int i = 0; i < written.values().length; i += 37) {
                assertEquals(written.stored(i), tensor.get(i), tensor.name() + " element " + i);
            }
            return tensor;
        };
        assertEquals("model.embed_tokens.weight", checked.apply(weights.embedding()).name());
        assertEquals("model.norm.weight", checked.apply(weights.finalNorm()).name());
        assertEquals(TinyLlama.LAYERS, weights.layers().size());
        for (int i = 0; i < TinyLlama.LAYERS; i++) {
            String p = "model.layers." + i + ".";
            LlamaWeights.Layer layer = weights.layer(i);
            assertEquals(p + "input_layernorm.weight", checked.apply(layer.attentionNorm()).name());
            assertEquals(p + "self_attn.q_proj.weight", checked.apply(layer.qProj()).name());
            assertEquals(p + "self_attn.k_proj.weight", checked.apply(layer.kProj()).name());
            assertEquals(p + "self_attn.v_proj.weight", checked.apply(layer.vProj()).name());
            assertEquals(p + "self_attn.o_proj.weight", checked.apply(layer.oProj()).name());
            assertEquals(p + "post_attention_layernorm.weight", checked.apply(layer.mlpNorm()).name());
            assertEquals(p + "mlp.gate_proj.weight", checked.apply(layer.gateProj()).name());
            assertEquals(p + "mlp.up_proj.weight", checked.apply(layer.upProj()).name());
            assertEquals(p + "mlp.down_proj.weight", checked.apply(layer.downProj()).name());
        }
    }

    @ParameterizedTest
    @EnumSource(DType.class)
    void loadsASingleFile(DType dtype) {
        TinyLlama model = TinyLlama.llama(dtype);

        try (MappedModel mapped = LlamaWeights.open(model.writeSingle(dir))) {
            LlamaWeights weights = mapped.weights();
            assertHoldsWhatWasWritten(model, weights);
            assertEquals("lm_head.weight", weights.lmHead().name());
            assertFalse(weights.lmHeadIsEmbedding());
            assertEquals(model.config(), weights.config());
            assertEquals(dir, mapped.directory());
        }
    }

    @Test
    void loadsShardsThroughTheIndex() {
        TinyLlama model = TinyLlama.llama(DType.BFLOAT16);

        try (MappedModel mapped = LlamaWeights.open(model.writeSharded(dir, 3))) {
            assertEquals(3, mapped.checkpoint().files().size());
            assertHoldsWhatWasWritten(model, mapped.weights());
            assertEquals(dir.resolve(TinyLlama.shardName(3, 3)), mapped.weights().lmHead().sourceFile());
        }
    }

    @Test
    void embeddingRowsConvertToFp32() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT16);
        float[] written = model.weights.get("model.embed_tokens.weight").values();

        try (MappedModel mapped = LlamaWeights.open(model.writeSingle(dir))) {
            float[] row = new float[HIDDEN];
            mapped.weights().embedding().rowTo(VOCAB - 1, row, 0);
            for (int c = 0; c < HIDDEN; c++) {
                assertEquals(SafetensorsWriter.stored(DType.FLOAT16, written[(VOCAB - 1) * HIDDEN + c]), row[c]);
            }
        }
    }

    @Test
    void tensorsMayMixDtypesAndDifferFromTheConfig() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT16)
                .put("model.norm.weight", DType.FLOAT32, HIDDEN)
                .put("model.layers.1.mlp.down_proj.weight", DType.BFLOAT16, HIDDEN, INTERMEDIATE);

        LlamaWeights weights = load(model, model.writeSingle(dir));

        assertEquals(DType.FLOAT16, weights.config().dtype());
        assertEquals(DType.FLOAT32, weights.finalNorm().dtype());
        assertEquals(DType.BFLOAT16, weights.layer(1).downProj().dtype());
        assertEquals(DType.FLOAT16, weights.layer(0).downProj().dtype());
    }

    @Test
    void loadsAMistralCheckpoint() {
        TinyLlama model = TinyLlama.mistral(DType.BFLOAT16);

        try (MappedModel mapped = LlamaWeights.open(model.writeSingle(dir))) {
            assertEquals(ModelType.MISTRAL, mapped.config().modelType());
            assertHoldsWhatWasWritten(model, mapped.weights());
        }
    }

    @Test
    void tiedEmbeddingsReuseTheEmbeddingAsTheHead() {
        TinyLlama model = TinyLlama.tiedLlama(DType.BFLOAT16);

        LlamaWeights weights = load(model, model.writeSingle(dir));

        assertSame(weights.embedding(), weights.lmHead());
        assertTrue(weights.lmHeadIsEmbedding());
    }

    @Test
    void tiedEmbeddingsWithAStoredHeadOfTheSameShapeUseIt() {
        TinyLlama model = TinyLlama.tiedLlama(DType.BFLOAT16).put("lm_head.weight", DType.BFLOAT16, VOCAB, HIDDEN);

        LlamaWeights weights = load(model, model.writeSingle(dir));

        assertEquals("lm_head.weight", weights.lmHead().name());
        assertFalse(weights.lmHeadIsEmbedding());
    }

    @Test
    void tiedEmbeddingsWithAStoredHeadOfAnotherShape() {
        TinyLlama model = TinyLlama.tiedLlama(DType.BFLOAT16).put("lm_head.weight", DType.BFLOAT16, VOCAB + 1, HIDDEN);
        Path file = model.writeSingle(dir).resolve(Checkpoint.SINGLE_FILE);

        CheckpointException e = reject(model, dir);

        assertEquals(file + ": tensor 'lm_head.weight': shape [101, 64], expected [100, 64]"
                + " = [vocab_size, hidden_size] from the config", e.getMessage());
    }

    @Test
    void missingTensor() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT16).remove("model.layers.1.self_attn.v_proj.weight");
        Path file = model.writeSingle(dir).resolve(Checkpoint.SINGLE_FILE);

        CheckpointException e = reject(model, dir);

        assertEquals(file + ": tensor 'model.layers.1.self_attn.v_proj.weight': missing (expected shape [32, 64]"
                + " = [num_key_value_heads * head_dim, hidden_size])", e.getMessage());
        assertEquals("model.layers.1.self_attn.v_proj.weight", e.tensor());
    }

    @Test
    void missingTensorsAreCountedAndTheIndexIsNamed() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT16)
                .remove("model.layers.0.mlp.up_proj.weight")
                .remove("model.norm.weight")
                .remove("model.layers.1.input_layernorm.weight");
        Path index = model.writeSharded(dir, 2).resolve(Checkpoint.INDEX_FILE);

        CheckpointException e = reject(model, dir);

        assertEquals(index + ": tensor 'model.layers.0.mlp.up_proj.weight': missing (expected shape [128, 64]"
                + " = [intermediate_size, hidden_size]); 2 more expected tensor(s) are missing too", e.getMessage());
    }

    @Test
    void untiedCheckpointWithoutAHead() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT32).remove("lm_head.weight");
        Path file = model.writeSingle(dir).resolve(Checkpoint.SINGLE_FILE);

        CheckpointException e = reject(model, dir);

        assertEquals(file + ": tensor 'lm_head.weight': missing (expected shape [100, 64] = [vocab_size, hidden_size]);"
                + " config.json has tie_word_embeddings false, so the LM head must be stored", e.getMessage());
    }

    @Test
    void misshapenTensorNamesItsShard() {
        // Multi-head K in a checkpoint whose config says grouped-query attention.
        TinyLlama model = TinyLlama.llama(DType.FLOAT16).put(K_PROJ_0, DType.FLOAT16, HIDDEN, HIDDEN);
        model.writeSharded(dir, 2);

        CheckpointException e = reject(model, dir);

        assertEquals(dir.resolve(TinyLlama.shardName(1, 2)) + ": tensor '" + K_PROJ_0 + "': shape [64, 64],"
                + " expected [32, 64] = [num_key_value_heads * head_dim, hidden_size] from the config", e.getMessage());
    }

    @Test
    void misshapenNormWithTheWrongRank() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT16).put("model.norm.weight", DType.FLOAT16, 1, HIDDEN);
        Path file = model.writeSingle(dir).resolve(Checkpoint.SINGLE_FILE);

        CheckpointException e = reject(model, dir);

        assertEquals(file + ": tensor 'model.norm.weight': shape [1, 64], expected [64] = [hidden_size]"
                + " from the config", e.getMessage());
    }

    @Test
    void attentionBiasIsRejectedByName() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT16)
                .put("model.layers.0.self_attn.q_proj.bias", DType.FLOAT16, HIDDEN);
        Path file = model.writeSingle(dir).resolve(Checkpoint.SINGLE_FILE);

        CheckpointException e = reject(model, dir);

        assertEquals(file + ": tensor 'model.layers.0.self_attn.q_proj.bias': unexpected tensor: attention biases"
                + " are not supported (Llama and Mistral have none; this is another model)", e.getMessage());
    }

    @Test
    void layerBeyondTheConfig() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT16)
                .put("model.layers.2.input_layernorm.weight", DType.FLOAT16, HIDDEN);
        Path file = model.writeSingle(dir).resolve(Checkpoint.SINGLE_FILE);

        CheckpointException e = reject(model, dir);

        assertEquals(file + ": tensor 'model.layers.2.input_layernorm.weight': unexpected tensor: layer 2 does not"
                + " exist, config.json has num_hidden_layers 2", e.getMessage());
    }

    @Test
    void unknownTensor() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT16).put("model.vision_tower.weight", DType.FLOAT16, 4);
        Path file = model.writeSingle(dir).resolve(Checkpoint.SINGLE_FILE);

        CheckpointException e = reject(model, dir);

        assertEquals(file + ": tensor 'model.vision_tower.weight': unexpected tensor: not a weight of LlamaForCausalLM",
                e.getMessage());
    }

    @Test
    void rotaryInverseFrequenciesAreIgnored() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT32)
                .put("model.layers.0.self_attn.rotary_emb.inv_freq", DType.FLOAT32, TinyLlama.HEAD_DIM / 2)
                .put("model.layers.1.self_attn.rotary_emb.inv_freq", DType.FLOAT32, TinyLlama.HEAD_DIM / 2);

        LlamaWeights weights = load(model, model.writeSingle(dir));

        assertEquals(TinyLlama.LAYERS, weights.layers().size());
    }

    @Test
    void openReportsABadConfigBeforeMappingAnything() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT16);
        model.writeSingle(dir);
        TinyLlama.write(dir.resolve("config.json"), "{}");

        ConfigException e = assertThrows(ConfigException.class, () -> LlamaWeights.open(dir));

        assertTrue(e.getMessage().startsWith(dir.resolve("config.json") + ": "), e.getMessage());
    }

    @Test
    void weightsAreUnreadableAfterTheModelCloses() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT16);
        MappedModel mapped = LlamaWeights.open(model.writeSingle(dir));
        Tensor wq = mapped.weights().layer(0).qProj();

        mapped.close();

        assertThrows(IllegalStateException.class, () -> wq.get(0));
    }

    @Test
    void layerListIsImmutable() {
        TinyLlama model = TinyLlama.llama(DType.FLOAT16);
        LlamaWeights weights = load(model, model.writeSingle(dir));
        List<LlamaWeights.Layer> layers = weights.layers();

        assertThrows(UnsupportedOperationException.class, () -> layers.remove(0));
    }
}
