package io.kvmix.models.llama;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.kvmix.core.attention.FusedAttention;
import io.kvmix.core.cache.FpPrecision;
import io.kvmix.core.cache.LayerKvCache;
import io.kvmix.core.cache.ModelKvShape;
import io.kvmix.core.cache.SequenceKvCache;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.config.ModelConfig;
import io.kvmix.models.ops.MatMul;
import io.kvmix.models.ops.RmsNorm;
import io.kvmix.models.ops.Rope;
import io.kvmix.models.weights.FiniteCheck;
import io.kvmix.models.weights.LlamaWeights;
import io.kvmix.models.weights.MappedModel;
import io.kvmix.models.weights.Tensor;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

/**
 * A Llama or Mistral model on the CPU: config, memory-mapped weights in their stored type, and a
 * forward pass whose attention goes through each sequence's {@link SequenceKvCache} (fp16 or any
 * KVmix plan) with the fused kernels of kvmix-core. No libtorch.
 */
public final class LlamaModel implements AutoCloseable {
    private final ModelConfig config;
    private final MappedModel mapped;
    private final LlamaWeights weights;
    private final Rope rope;
    private final List<Integer> eosTokenIds;

    private LlamaModel(MappedModel mapped, List<Integer> eosTokenIds) {
        this.config = mapped.config();
        this.mapped = mapped;
        this.weights = mapped.weights();
        this.rope = new Rope(config.headDim(), config.ropeTheta());
        this.eosTokenIds = eosTokenIds;
    }

    /** Loads {@code DIR/config.json}, the safetensors checkpoint and {@code generation_config.json} if present. */
    public static LlamaModel load(Path modelDir) {
        MappedModel mapped = LlamaWeights.open(modelDir);
        try {
            LlamaModel model = new LlamaModel(mapped, eosTokens(modelDir, mapped.config()));
            model.allTensors().forEach(FiniteCheck::requireFinite);
            return model;
        } catch (RuntimeException e) {
            mapped.close();
            throw e;
        }
    }

    /** EOS ids: generation_config.json's {@code eos_token_id} when present, else config.json's. */
    private static List<Integer> eosTokens(Path modelDir, ModelConfig config) {
        Set<Integer> ids = new LinkedHashSet<>(config.eosTokenIds());
        Path generation = modelDir.resolve("generation_config.json");
        if (Files.isRegularFile(generation)) {
            try {
                JsonNode eos = new ObjectMapper().readTree(generation.toFile()).get("eos_token_id");
                if (eos != null && eos.isInt()) {
                    ids.add(eos.asInt());
                } else if (eos != null && eos.isArray()) {
                    eos.forEach(id -> ids.add(id.asInt()));
                }
            } catch (IOException e) {
                throw new UncheckedIOException(generation + ": " + e.getMessage(), e);
            }
        }
        return List.copyOf(ids);
    }

    public ModelConfig config() {
        return config;
    }

    public List<Integer> eosTokenIds() {
        return eosTokenIds;
    }

    /** Every weight tensor the forward pass reads (the embedding once even when tied to the LM head). */
    private List<Tensor> allTensors() {
        List<Tensor> all = new ArrayList<>();
        all.add(weights.embedding());
        for (LlamaWeights.Layer l : weights.layers()) {
            all.addAll(List.of(l.attentionNorm(), l.qProj(), l.kProj(), l.vProj(), l.oProj(), l.mlpNorm(),
                    l.gateProj(), l.upProj(), l.downProj()));
        }
        all.add(weights.finalNorm());
        if (!weights.lmHeadIsEmbedding()) {
            all.add(weights.lmHead());
        }
        return all;
    }

    /** Bytes of weights one decode step reads: every layer's matrices and norms, the final norm and the LM head. */
    public long decodeWeightBytes() {
        long total = weights.lmHead().data().byteSize();
        for (Tensor t : allTensors()) {
            if (t != weights.embedding()) {
                total += t.data().byteSize();
            }
        }
        return total;
    }

    /** The cache shape of this model, with {@code max_position_embeddings} as capacity. */
    public ModelKvShape kvShape() {
        return new ModelKvShape(config.numHiddenLayers(), config.numAttentionHeads(), config.numKeyValueHeads(),
                config.headDim(), config.maxPositionEmbeddings(), config.slidingWindow().orElse(0));
    }

    /** A new sequence with an fp16 cache ({@code plan} null) or a KVmix cache. */
    public LlamaState newState(QuantPlan plan) {
        return new LlamaState(SequenceKvCache.create(kvShape(), plan));
    }

    /** A new sequence whose full-precision cache keeps tokens in {@code precision} (fp32: an explicit option). */
    public LlamaState newState(QuantPlan plan, FpPrecision precision) {
        return new LlamaState(SequenceKvCache.create(kvShape(), plan, precision));
    }

    /**
     * Runs {@code tokens} through the model at the state's next positions.
     *
     * @return logits {@code [tokens][vocab]} if {@code allLogits}, else {@code [vocab]} of the last token
     */
    public float[] forward(LlamaState state, int[] tokens, boolean allLogits) {
        return forward(List.of(state), List.of(tokens), allLogits).getFirst();
    }

    /**
     * One step for a batch of sequences, each with its own cache: the dense layers run once over all
     * their tokens (each weight is read once per step), attention runs per sequence.
     */
    public List<float[]> forward(List<LlamaState> states, List<int[]> tokens, boolean allLogits) {
        int hidden = config.hiddenSize();
        int heads = config.numAttentionHeads();
        int kvHeads = config.numKeyValueHeads();
        int qDim = config.qDim();
        int kvDim = config.kvDim();
        int inter = config.intermediateSize();
        int vocab = config.vocabSize();

        int[] offsets = new int[states.size() + 1];   // sequence s owns rows offsets[s] .. offsets[s+1]-1
        for (int s = 0; s < states.size(); s++) {
            checkStep(states.get(s), tokens.get(s), s);
            offsets[s + 1] = offsets[s] + tokens.get(s).length;
        }
        int n = offsets[states.size()];
        int[] positions = new int[n];
        float[] x = new float[n * hidden];            // residual stream [n][hidden]
        for (int s = 0; s < states.size(); s++) {
            int[] ids = tokens.get(s);
            for (int j = 0; j < ids.length; j++) {
                positions[offsets[s] + j] = states.get(s).position() + j;
                weights.embedding().rowTo(ids[j], x, (offsets[s] + j) * hidden);
            }
        }

        float[] xn = new float[n * hidden];           // normalized input of a block
        float[] q = new float[n * qDim];              // [n][heads * headDim]
        float[] k = new float[n * kvDim];             // [n][kvHeads * headDim]
        float[] v = new float[n * kvDim];
        float[] attention = new float[n * qDim];
        float[] projected = new float[n * hidden];
        float[] gate = new float[n * inter];          // [n][intermediate]
        float[] up = new float[n * inter];
        float scale = (float) config.attentionScale();

        for (int l = 0; l < config.numHiddenLayers(); l++) {
            LlamaWeights.Layer layer = weights.layers().get(l);

            // attention block: x += o_proj(attention(rope(q), rope(k), v))
            norm(x, n, layer.attentionNorm(), xn);
            matmul(layer.qProj(), xn, n, q);
            matmul(layer.kProj(), xn, n, k);
            matmul(layer.vProj(), xn, n, v);
            rope.apply(q, n, heads, positions);
            rope.apply(k, n, kvHeads, positions);
            for (int s = 0; s < states.size(); s++) {
                int rows = offsets[s + 1] - offsets[s];
                LayerKvCache cache = states.get(s).cache().layer(l);
                cache.append(k, offsets[s] * kvDim, v, offsets[s] * kvDim, rows);
                FusedAttention.vector().attend(cache, q, offsets[s] * qDim, rows, heads, scale, attention,
                        offsets[s] * qDim);
            }
            matmul(layer.oProj(), attention, n, projected);
            add(x, projected);

            // MLP block: x += down_proj(silu(gate_proj(x)) * up_proj(x))
            norm(x, n, layer.mlpNorm(), xn);
            matmul(layer.gateProj(), xn, n, gate);
            matmul(layer.upProj(), xn, n, up);
            for (int i = 0; i < n * inter; i++) {
                float g = gate[i];
                gate[i] = g / (1f + (float) Math.exp(-g)) * up[i];
            }
            matmul(layer.downProj(), gate, n, projected);
            add(x, projected);
            checkFinite(x, n, hidden, l, positions);
        }

        norm(x, n, weights.finalNorm(), xn);
        List<float[]> logits = new ArrayList<>(states.size());
        for (int s = 0; s < states.size(); s++) {
            int first = allLogits ? offsets[s] : offsets[s + 1] - 1;
            int rows = offsets[s + 1] - first;
            float[] input = java.util.Arrays.copyOfRange(xn, first * hidden, (first + rows) * hidden);
            float[] out = new float[rows * vocab];
            matmul(weights.lmHead(), input, rows, out);
            for (int i = 0; i < out.length; i++) {
                if (!Float.isFinite(out[i])) {
                    throw new ArithmeticException("lm_head: non-finite logit " + out[i] + " for token " + i % vocab
                            + " at position " + positions[first + i / vocab] + " (sequence " + s + ")");
                }
            }
            logits.add(out);
            states.get(s).advance(tokens.get(s).length);
        }
        return logits;
    }

    private void checkStep(LlamaState state, int[] ids, int sequence) {
        if (ids.length == 0) {
            throw new IllegalArgumentException("sequence " + sequence + ": a step needs at least one token");
        }
        long end = (long) state.position() + ids.length;
        if (end > config.maxPositionEmbeddings()) {
            throw new IllegalArgumentException("sequence " + sequence + ": context of " + end
                    + " tokens exceeds max_position_embeddings " + config.maxPositionEmbeddings());
        }
        for (int j = 0; j < ids.length; j++) {
            if (ids[j] < 0 || ids[j] >= config.vocabSize()) {
                throw new IllegalArgumentException("sequence " + sequence + ": token id " + ids[j] + " at position "
                        + (state.position() + j) + " is outside the vocabulary (0.." + (config.vocabSize() - 1) + ")");
            }
        }
    }

    private void norm(float[] x, int n, Tensor weight, float[] out) {
        RmsNorm.apply(x, n, config.hiddenSize(), weight.data(), weight.dtype(), config.rmsNormEps(), out);
    }

    private static void matmul(Tensor w, float[] x, int n, float[] out) {
        long[] shape = w.shape();
        MatMul.multiply(w.data(), w.dtype(), (int) shape[0], (int) shape[1], x, n, out);
    }

    private static void add(float[] x, float[] y) {
        for (int i = 0; i < x.length; i++) {
            x[i] += y[i];
        }
    }

    /** A NaN or infinity in the residual stream is an error naming layer and position, never a silent answer. */
    private static void checkFinite(float[] x, int n, int hidden, int layer, int[] positions) {
        for (int i = 0; i < n * hidden; i++) {
            if (!Float.isFinite(x[i])) {
                throw new ArithmeticException("layer " + layer + ": non-finite activation " + x[i] + " at position "
                        + positions[i / hidden] + ", channel " + i % hidden);
            }
        }
    }

    @Override
    public void close() {
        mapped.close();
    }
}
