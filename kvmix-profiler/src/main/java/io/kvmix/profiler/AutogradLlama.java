package io.kvmix.profiler;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import io.kvmix.models.config.ModelConfig;
import io.kvmix.models.ops.Rope;
import io.kvmix.models.weights.LlamaWeights;
import io.kvmix.models.weights.Tensor;

import java.util.ArrayList;
import java.util.List;

/**
 * A Llama/Mistral decoder as a DJL (PyTorch engine) autograd graph, in fp32, built from the weights
 * kvmix-models loads. It computes exactly what transformers' {@code LlamaForCausalLM} /
 * {@code MistralForCausalLM} compute for one sequence (batch of one, positions 0..T-1): RMSNorm,
 * rotate-half RoPE, grouped-query causal attention (with the sliding window when the config has
 * one), SiLU-gated MLP, final norm and LM head.
 *
 * <p>Only the {@code k_proj} and {@code v_proj} weights require gradients, so a backward pass
 * computes the activations' gradients and those two weights' per layer, nothing else.
 * fp16 and bf16 checkpoints are widened to fp32 here (DJL's fp16 CPU matmul is ~100x slower and
 * its bf16 conversion aborts the JVM).
 *
 * <p>The arrays belong to this object's {@link NDManager}; {@link #close()} frees them.
 */
final class AutogradLlama implements AutoCloseable {
    private final ModelConfig config;
    private final LlamaWeights weights;
    private final NDManager manager;
    private final List<LayerArrays> layers;
    private final NDArray finalNorm;   // [hidden]
    private final NDArray lmHead;      // [vocab, hidden]
    private final Rope rope;

    /** One decoder layer's weights in PyTorch {@code [out, in]} order. */
    private record LayerArrays(NDArray attentionNorm, NDArray qProj, NDArray kProj, NDArray vProj,
                               NDArray oProj, NDArray mlpNorm, NDArray gateProj, NDArray upProj,
                               NDArray downProj) {
    }

    AutogradLlama(LlamaWeights weights, NDManager parent) {
        this.config = weights.config();
        this.weights = weights;
        this.manager = parent.newSubManager();
        this.rope = new Rope(config.headDim(), config.ropeTheta());
        try {
            List<LayerArrays> loaded = new ArrayList<>(config.numHiddenLayers());
            for (LlamaWeights.Layer layer : weights.layers()) {
                NDArray kProj = array(layer.kProj());
                NDArray vProj = array(layer.vProj());
                kProj.setRequiresGradient(true);
                vProj.setRequiresGradient(true);
                loaded.add(new LayerArrays(array(layer.attentionNorm()), array(layer.qProj()), kProj, vProj,
                        array(layer.oProj()), array(layer.mlpNorm()), array(layer.gateProj()),
                        array(layer.upProj()), array(layer.downProj())));
            }
            this.layers = List.copyOf(loaded);
            this.finalNorm = array(weights.finalNorm());
            this.lmHead = weights.lmHeadIsEmbedding() ? array(weights.embedding()) : array(weights.lmHead());
        } catch (RuntimeException | Error e) {
            manager.close();
            throw e;
        }
    }

    ModelConfig config() {
        return config;
    }

    /** Layer {@code layer}'s {@code k_proj.weight}, {@code [kvDim, hidden]}, which collects gradients. */
    NDArray keyProjection(int layer) {
        return layers.get(layer).kProj();
    }

    /** Layer {@code layer}'s {@code v_proj.weight}, {@code [kvDim, hidden]}, which collects gradients. */
    NDArray valueProjection(int layer) {
        return layers.get(layer).vProj();
    }

    /**
     * Next-token logits of every position, {@code [T, vocab]}, for the sequence {@code ids} at
     * positions 0..T-1. Intermediate arrays belong to {@code scope}.
     */
    NDArray logits(NDManager scope, int[] ids) {
        int tokens = ids.length;
        NDArray x = scope.create(embeddingRows(ids), new Shape(tokens, config.hiddenSize())); // [T, hidden]
        NDArray[] rotary = rotaryTables(scope, tokens);                                      // cos, sin: [T, hd]
        NDArray mask = attentionMask(scope, tokens);                                         // [T, T]
        for (LayerArrays layer : layers) {
            x = x.add(attention(layer, rmsNorm(x, layer.attentionNorm()), rotary, mask));
            x = x.add(mlp(layer, rmsNorm(x, layer.mlpNorm())));
        }
        return linear(rmsNorm(x, finalNorm), lmHead);
    }

    /**
     * The mean next-token cross-entropy over positions 0..T-2 (position t predicts {@code ids[t+1]}),
     * the loss transformers computes for {@code model(ids, labels=ids)}: a scalar.
     */
    NDArray nextTokenLoss(NDManager scope, int[] ids) {
        int tokens = ids.length;
        NDArray logits = logits(scope, ids);                                   // [T, vocab]
        NDArray predicting = logits.get(new NDIndex("0:{}", tokens - 1));      // [T-1, vocab]
        int[] next = new int[tokens - 1];
        System.arraycopy(ids, 1, next, 0, tokens - 1);
        NDArray labels = scope.create(next, new Shape(tokens - 1, 1)).toType(DataType.INT64, false);
        NDArray logProbabilities = predicting.logSoftmax(-1);
        return logProbabilities.gather(labels, 1).mean().neg();
    }

    /** {@code x}: [T, hidden] -> attention output [T, hidden], before the residual add. */
    private NDArray attention(LayerArrays layer, NDArray x, NDArray[] rotary, NDArray mask) {
        int tokens = (int) x.getShape().get(0);
        int headDim = config.headDim();
        int kvHeads = config.numKeyValueHeads();
        int groups = config.queryGroupSize();
        NDArray q = heads(linear(x, layer.qProj()), config.numAttentionHeads(), rotary); // [H, T, hd]
        NDArray k = heads(linear(x, layer.kProj()), kvHeads, rotary);                    // [Hkv, T, hd]
        NDArray v = linear(x, layer.vProj()).reshape(tokens, kvHeads, headDim).transpose(1, 0, 2);
        // Query head h = kv * groups + g uses KV head kv: fold the group into the row axis.
        NDArray queries = q.reshape(kvHeads, (long) groups * tokens, headDim);         // [Hkv, g*T, hd]
        NDArray scores = queries.matMul(k.transpose(0, 2, 1)).mul(config.attentionScale())
                .reshape(kvHeads, groups, tokens, tokens).add(mask);                   // [Hkv, g, T, T]
        NDArray weights = scores.softmax(-1).reshape(kvHeads, (long) groups * tokens, tokens);
        NDArray context = weights.matMul(v)                                             // [Hkv, g*T, hd]
                .reshape(config.numAttentionHeads(), tokens, headDim)
                .transpose(1, 0, 2)
                .reshape(tokens, config.qDim());                                        // [T, H*hd]
        return linear(context, layer.oProj());
    }

    /** {@code projected}: [T, heads*hd] -> RoPE-rotated [heads, T, hd]. */
    private NDArray heads(NDArray projected, int heads, NDArray[] rotary) {
        int tokens = (int) projected.getShape().get(0);
        int headDim = config.headDim();
        NDArray x = projected.reshape(tokens, heads, headDim).transpose(1, 0, 2);
        int half = headDim / 2;
        NDArray first = x.get(new NDIndex("..., 0:{}", half));
        NDArray second = x.get(new NDIndex("..., {}:", half));
        NDArray rotatedHalf = NDArrays.concat(new NDList(second.neg(), first), -1);
        return x.mul(rotary[0]).add(rotatedHalf.mul(rotary[1]));
    }

    private static NDArray mlp(LayerArrays layer, NDArray x) {
        NDArray gate = linear(x, layer.gateProj());
        NDArray silu = gate.mul(Activation.sigmoid(gate));
        return linear(silu.mul(linear(x, layer.upProj())), layer.downProj());
    }

    /** RMSNorm as transformers computes it in fp32: {@code w * x / sqrt(mean(x^2) + eps)}. */
    private NDArray rmsNorm(NDArray x, NDArray weight) {
        NDArray variance = x.square().mean(new int[] {-1}, true);
        return x.div(variance.add(config.rmsNormEps()).sqrt()).mul(weight);
    }

    /** {@code x @ weight^T}: x [T, in], weight [out, in] -> [T, out]. */
    private static NDArray linear(NDArray x, NDArray weight) {
        return x.matMul(weight.transpose());
    }

    /** cos and sin of every position's angles, each [T, hd] (both halves of a head share angles). */
    private NDArray[] rotaryTables(NDManager scope, int tokens) {
        int headDim = config.headDim();
        int half = headDim / 2;
        float[] cos = new float[tokens * headDim];
        float[] sin = new float[tokens * headDim];
        for (int t = 0; t < tokens; t++) {
            for (int i = 0; i < half; i++) {
                float angle = t * rope.inverseFrequency(i);
                float c = (float) Math.cos(angle);
                float s = (float) Math.sin(angle);
                cos[t * headDim + i] = c;
                cos[t * headDim + half + i] = c;
                sin[t * headDim + i] = s;
                sin[t * headDim + half + i] = s;
            }
        }
        Shape shape = new Shape(tokens, headDim);
        return new NDArray[] {scope.create(cos, shape), scope.create(sin, shape)};
    }

    /**
     * Additive mask [T, T]: 0 where query t may see key j (j <= t, and t - j < window when the model
     * has a sliding window), -inf elsewhere.
     */
    private NDArray attentionMask(NDManager scope, int tokens) {
        int window = config.slidingWindow().orElse(Integer.MAX_VALUE);
        float[] mask = new float[tokens * tokens];
        for (int t = 0; t < tokens; t++) {
            for (int j = 0; j < tokens; j++) {
                boolean visible = j <= t && t - j < window;
                mask[t * tokens + j] = visible ? 0f : Float.NEGATIVE_INFINITY;
            }
        }
        return scope.create(mask, new Shape(tokens, tokens));
    }

    /** The embedding rows of {@code ids}, [T * hidden]; ids were checked against the vocabulary. */
    private float[] embeddingRows(int[] ids) {
        int hidden = config.hiddenSize();
        float[] rows = new float[ids.length * hidden];
        Tensor embedding = weights.embedding();
        for (int t = 0; t < ids.length; t++) {
            embedding.rowTo(ids[t], rows, t * hidden);
        }
        return rows;
    }

    private NDArray array(Tensor tensor) {
        long[] shape = tensor.shape();
        return manager.create(tensor.toFloatArray(), new Shape(shape));
    }

    @Override
    public void close() {
        manager.close();
    }
}
