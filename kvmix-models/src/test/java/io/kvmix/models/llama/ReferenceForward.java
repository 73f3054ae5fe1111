package io.kvmix.models.llama;

import com.fasterxml.jackson.databind.JsonNode;
import io.kvmix.models.weights.SafetensorsFile;

import java.nio.file.Path;

/**
 * A deliberately plain Llama/Mistral forward pass for tests, written from transformers' modeling code
 * rather than from {@link LlamaModel}: scalar loops, double accumulation, no cache, full causal
 * attention over the whole prompt (with Mistral's window: a query at p sees keys p-W+1..p).
 * Optionally rounds keys (after RoPE) and values to fp16 as the default KV cache stores them
 * (DESIGN.md "Quantization semantics"), which separates the cache's rounding from everything else.
 */
final class ReferenceForward {
    private final int hidden;
    private final int heads;
    private final int kvHeads;
    private final int headDim;
    private final int inter;
    private final int vocab;
    private final int layers;
    private final int window;
    private final double eps;
    private final double theta;
    private final float[] embedding;
    private final float[] lmHead;
    private final float[] finalNorm;
    private final float[][] attnNorm;
    private final float[][] mlpNorm;
    private final float[][] wq;
    private final float[][] wk;
    private final float[][] wv;
    private final float[][] wo;
    private final float[][] gate;
    private final float[][] up;
    private final float[][] down;

    ReferenceForward(Path modelDir) {
        JsonNode config = GoldenData.readJson(modelDir.resolve("config.json"));
        hidden = config.get("hidden_size").intValue();
        heads = config.get("num_attention_heads").intValue();
        kvHeads = config.get("num_key_value_heads").intValue();
        headDim = config.get("head_dim").intValue();
        inter = config.get("intermediate_size").intValue();
        vocab = config.get("vocab_size").intValue();
        layers = config.get("num_hidden_layers").intValue();
        JsonNode sliding = config.get("sliding_window");
        window = sliding == null || sliding.isNull() ? Integer.MAX_VALUE : sliding.intValue();
        eps = config.get("rms_norm_eps").doubleValue();
        theta = config.get("rope_parameters").get("rope_theta").doubleValue();
        try (SafetensorsFile file = SafetensorsFile.open(modelDir.resolve("model.safetensors"))) {
            embedding = file.tensor("model.embed_tokens.weight").toFloatArray();
            lmHead = file.contains("lm_head.weight") ? file.tensor("lm_head.weight").toFloatArray() : embedding;
            finalNorm = file.tensor("model.norm.weight").toFloatArray();
            attnNorm = new float[layers][];
            mlpNorm = new float[layers][];
            wq = new float[layers][];
            wk = new float[layers][];
            wv = new float[layers][];
            wo = new float[layers][];
            gate = new float[layers][];
            up = new float[layers][];
            down = new float[layers][];
            for (int l = 0; l < layers; l++) {
                String p = "model.layers." + l + ".";
                attnNorm[l] = file.tensor(p + "input_layernorm.weight").toFloatArray();
                mlpNorm[l] = file.tensor(p + "post_attention_layernorm.weight").toFloatArray();
                wq[l] = file.tensor(p + "self_attn.q_proj.weight").toFloatArray();
                wk[l] = file.tensor(p + "self_attn.k_proj.weight").toFloatArray();
                wv[l] = file.tensor(p + "self_attn.v_proj.weight").toFloatArray();
                wo[l] = file.tensor(p + "self_attn.o_proj.weight").toFloatArray();
                gate[l] = file.tensor(p + "mlp.gate_proj.weight").toFloatArray();
                up[l] = file.tensor(p + "mlp.up_proj.weight").toFloatArray();
                down[l] = file.tensor(p + "mlp.down_proj.weight").toFloatArray();
            }
        }
    }

    /** Logits {@code [ids.length][vocab]} of a causal forward of {@code ids} from position 0. */
    float[] logits(int[] ids, boolean fp16KeysValues) {
        int n = ids.length;
        float[][] x = new float[n][hidden];
        for (int t = 0; t < n; t++) {
            System.arraycopy(embedding, ids[t] * hidden, x[t], 0, hidden);
        }
        int qDim = heads * headDim;
        int kvDim = kvHeads * headDim;
        int group = heads / kvHeads;
        for (int l = 0; l < layers; l++) {
            float[][] q = new float[n][];
            float[][] k = new float[n][];
            float[][] v = new float[n][];
            for (int t = 0; t < n; t++) {
                float[] xn = rmsNorm(x[t], attnNorm[l]);
                q[t] = linear(wq[l], qDim, xn);
                k[t] = linear(wk[l], kvDim, xn);
                v[t] = linear(wv[l], kvDim, xn);
                rope(q[t], heads, t);
                rope(k[t], kvHeads, t);
                if (fp16KeysValues) {
                    toFp16(k[t]);
                    toFp16(v[t]);
                }
            }
            double scale = 1 / Math.sqrt(headDim);
            for (int t = 0; t < n; t++) {
                float[] attention = new float[qDim];
                int first = (int) Math.max(0, (long) t - window + 1);
                for (int h = 0; h < heads; h++) {
                    int kvh = h / group;
                    double[] scores = new double[t + 1];
                    double max = Double.NEGATIVE_INFINITY;
                    for (int s = first; s <= t; s++) {
                        double dot = 0;
                        for (int c = 0; c < headDim; c++) {
                            dot += (double) q[t][h * headDim + c] * k[s][kvh * headDim + c];
                        }
                        scores[s] = dot * scale;
                        max = Math.max(max, scores[s]);
                    }
                    double sum = 0;
                    for (int s = first; s <= t; s++) {
                        scores[s] = Math.exp(scores[s] - max);
                        sum += scores[s];
                    }
                    for (int c = 0; c < headDim; c++) {
                        double out = 0;
                        for (int s = first; s <= t; s++) {
                            out += scores[s] * v[s][kvh * headDim + c];
                        }
                        attention[h * headDim + c] = (float) (out / sum);
                    }
                }
                float[] projected = linear(wo[l], hidden, attention);
                for (int i = 0; i < hidden; i++) {
                    x[t][i] += projected[i];
                }
            }
            for (int t = 0; t < n; t++) {
                float[] xn = rmsNorm(x[t], mlpNorm[l]);
                float[] g = linear(gate[l], inter, xn);
                float[] u = linear(up[l], inter, xn);
                for (int i = 0; i < inter; i++) {
                    g[i] = (float) (g[i] / (1 + Math.exp(-g[i])) * u[i]);
                }
                float[] projected = linear(down[l], hidden, g);
                for (int i = 0; i < hidden; i++) {
                    x[t][i] += projected[i];
                }
            }
        }
        float[] logits = new float[n * vocab];
        for (int t = 0; t < n; t++) {
            System.arraycopy(linear(lmHead, vocab, rmsNorm(x[t], finalNorm)), 0, logits, t * vocab, vocab);
        }
        return logits;
    }

    private float[] rmsNorm(float[] x, float[] weight) {
        double squares = 0;
        for (float value : x) {
            squares += (double) value * value;
        }
        double inv = 1 / Math.sqrt(squares / x.length + eps);
        float[] out = new float[x.length];
        for (int i = 0; i < x.length; i++) {
            out[i] = (float) (x[i] * inv) * weight[i];
        }
        return out;
    }

    /** {@code W x} for {@code W [rows][x.length]}. */
    private static float[] linear(float[] w, int rows, float[] x) {
        int cols = x.length;
        float[] out = new float[rows];
        for (int r = 0; r < rows; r++) {
            double sum = 0;
            int base = r * cols;
            for (int c = 0; c < cols; c++) {
                sum += (double) w[base + c] * x[c];
            }
            out[r] = (float) sum;
        }
        return out;
    }

    /** transformers' rotate_half RoPE: channel i pairs with i + d/2, frequency theta^(-2i/d). */
    private void rope(float[] row, int headCount, int position) {
        int half = headDim / 2;
        for (int h = 0; h < headCount; h++) {
            int base = h * headDim;
            for (int i = 0; i < half; i++) {
                float invFreq = (float) (1.0 / Math.pow(theta, (double) (2 * i) / headDim));
                float angle = position * invFreq;
                double cos = Math.cos(angle);
                double sin = Math.sin(angle);
                double a = row[base + i];
                double b = row[base + i + half];
                row[base + i] = (float) (a * cos - b * sin);
                row[base + i + half] = (float) (b * cos + a * sin);
            }
        }
    }

    private static void toFp16(float[] row) {
        for (int i = 0; i < row.length; i++) {
            row[i] = Float.float16ToFloat(Float.floatToFloat16(row[i]));
        }
    }
}
