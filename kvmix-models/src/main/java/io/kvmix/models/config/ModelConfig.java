package io.kvmix.models.config;

import java.nio.file.Path;
import java.util.List;
import java.util.Objects;
import java.util.OptionalInt;

/**
 * The architecture of a Llama or Mistral checkpoint, as its Hugging Face {@code config.json}
 * describes it, with every default already applied the way transformers applies it.
 *
 * <p>Everything that sizes a tensor, a RoPE table or a KV cache comes from here, so the
 * components are exactly the numbers a forward pass needs and nothing it may not honour: a config
 * the Java forward would compute differently from transformers (scaled RoPE, biases, another
 * activation, another architecture, quantized weights) is rejected by {@link #parse}, never
 * silently approximated.
 * Implied by every accepted config: SiLU-gated MLP, RMSNorm before attention and before the MLP,
 * no biases anywhere, standard ("default") rotary embeddings on the whole head.
 *
 * <p>Weight shapes (PyTorch {@code [out, in]} order) for layer {@code i} of
 * {@link #numHiddenLayers()}:
 * <pre>
 *   model.embed_tokens.weight                  [vocabSize, hiddenSize]
 *   model.layers.i.input_layernorm.weight      [hiddenSize]
 *   model.layers.i.self_attn.q_proj.weight     [qDim, hiddenSize]        qDim  = numAttentionHeads * headDim
 *   model.layers.i.self_attn.k_proj.weight     [kvDim, hiddenSize]       kvDim = numKeyValueHeads * headDim
 *   model.layers.i.self_attn.v_proj.weight     [kvDim, hiddenSize]
 *   model.layers.i.self_attn.o_proj.weight     [hiddenSize, qDim]
 *   model.layers.i.post_attention_layernorm.weight [hiddenSize]
 *   model.layers.i.mlp.gate_proj.weight        [intermediateSize, hiddenSize]
 *   model.layers.i.mlp.up_proj.weight          [intermediateSize, hiddenSize]
 *   model.layers.i.mlp.down_proj.weight        [hiddenSize, intermediateSize]
 *   model.norm.weight                          [hiddenSize]
 *   lm_head.weight                             [vocabSize, hiddenSize]   (absent when tieWordEmbeddings)
 * </pre>
 * The KV cache holds, per layer and token, {@code numKeyValueHeads} keys and values of
 * {@code headDim} each; query head {@code h} attends with KV head {@code h / queryGroupSize()}.
 *
 * <p>Validation errors are {@link ConfigException}s whose message names the file and the field.
 *
 * @param modelType             model family ({@code model_type} / {@code architectures})
 * @param vocabSize             {@code vocab_size}: rows of the embedding and of the LM head
 * @param hiddenSize            {@code hidden_size}: width of the residual stream
 * @param intermediateSize      {@code intermediate_size}: width of the gated MLP
 * @param numHiddenLayers       {@code num_hidden_layers}: decoder layers
 * @param numAttentionHeads     {@code num_attention_heads}: query heads per layer
 * @param numKeyValueHeads      {@code num_key_value_heads}: key/value heads per layer (GQA when
 *                              fewer than query heads); divides {@code numAttentionHeads}
 * @param headDim               {@code head_dim}: width of one head (even, as RoPE rotates pairs);
 *                              {@code hiddenSize / numAttentionHeads} unless the config says otherwise
 * @param maxPositionEmbeddings {@code max_position_embeddings}: the context length the model was
 *                              trained for (a bound to warn at, not a RoPE parameter here)
 * @param ropeTheta             RoPE base frequency ({@code rope_theta} or
 *                              {@code rope_parameters.rope_theta})
 * @param rmsNormEps            {@code rms_norm_eps}: epsilon of every RMSNorm
 * @param slidingWindow         {@code sliding_window}: how many most recent positions (the current
 *                              one included) a query may attend to; empty for full attention
 *                              (always empty for Llama)
 * @param tieWordEmbeddings     {@code tie_word_embeddings}: the LM head reuses the embedding matrix
 * @param dtype                 {@code torch_dtype} / {@code dtype}: stored type of the weights
 * @param bosTokenId            {@code bos_token_id}, empty when the config sets it to null
 * @param eosTokenIds           {@code eos_token_id} as a list (a single id becomes a one-element
 *                              list, null an empty one); generation stops at any of them
 * @param padTokenId            {@code pad_token_id}, empty when absent or null (kept verbatim: old
 *                              Llama conversions write -1)
 */
public record ModelConfig(
        ModelType modelType,
        int vocabSize,
        int hiddenSize,
        int intermediateSize,
        int numHiddenLayers,
        int numAttentionHeads,
        int numKeyValueHeads,
        int headDim,
        int maxPositionEmbeddings,
        double ropeTheta,
        double rmsNormEps,
        OptionalInt slidingWindow,
        boolean tieWordEmbeddings,
        DType dtype,
        OptionalInt bosTokenId,
        List<Integer> eosTokenIds,
        OptionalInt padTokenId) {

    /** The file name {@link #read(Path)} looks for inside a model directory. */
    public static final String FILE_NAME = "config.json";

    /**
     * Checks the invariants every forward pass relies on, so a config built in code (random-weight
     * benchmarks, tests) is held to the same rules as a parsed one. Errors carry no source; the
     * parser re-attributes them to its file.
     */
    public ModelConfig {
        Objects.requireNonNull(modelType, "modelType");
        Objects.requireNonNull(slidingWindow, "slidingWindow");
        Objects.requireNonNull(dtype, "dtype");
        Objects.requireNonNull(bosTokenId, "bosTokenId");
        Objects.requireNonNull(padTokenId, "padTokenId");
        eosTokenIds = List.copyOf(eosTokenIds);

        requirePositive("vocab_size", vocabSize);
        requirePositive("hidden_size", hiddenSize);
        requirePositive("intermediate_size", intermediateSize);
        requirePositive("num_hidden_layers", numHiddenLayers);
        requirePositive("num_attention_heads", numAttentionHeads);
        requirePositive("num_key_value_heads", numKeyValueHeads);
        requirePositive("head_dim", headDim);
        requirePositive("max_position_embeddings", maxPositionEmbeddings);
        requirePositiveFinite("rope_theta", ropeTheta);
        requirePositiveFinite("rms_norm_eps", rmsNormEps);
        if (numAttentionHeads % numKeyValueHeads != 0) {
            throw new ConfigException(null, "num_key_value_heads",
                    "num_attention_heads (" + numAttentionHeads + ") is not divisible by num_key_value_heads ("
                            + numKeyValueHeads + ")");
        }
        if (headDim % 2 != 0) {
            throw new ConfigException(null, "head_dim",
                    "head_dim (" + headDim + ") must be even: rotary embeddings rotate pairs of channels");
        }
        if (slidingWindow.isPresent()) {
            if (!modelType.supportsSlidingWindow()) {
                throw new ConfigException(null, "sliding_window",
                        "sliding_window is not supported for model_type '" + modelType.hfName() + "'");
            }
            requirePositive("sliding_window", slidingWindow.getAsInt());
        }
    }

    /**
     * Reads {@code config.json}. {@code configJsonOrModelDir} is either the file itself or a model
     * directory, in which case {@code DIR/config.json} is read. Error messages name the file read.
     *
     * @throws ConfigException if the file is missing, unreadable, malformed, unsupported or invalid
     */
    public static ModelConfig read(Path configJsonOrModelDir) {
        return ConfigParser.read(configJsonOrModelDir);
    }

    /**
     * Parses the text of a {@code config.json}.
     *
     * @param json       the JSON text
     * @param sourceName what error messages call it (a path, or just {@code "config.json"})
     * @throws ConfigException if the JSON is malformed, unsupported or invalid
     */
    public static ModelConfig parse(String json, String sourceName) {
        return ConfigParser.parse(json, sourceName);
    }

    /** Query heads sharing one KV head: {@code numAttentionHeads / numKeyValueHeads} (1 = MHA). */
    public int queryGroupSize() {
        return numAttentionHeads / numKeyValueHeads;
    }

    /** Width of a layer's query projection output: {@code numAttentionHeads * headDim}. */
    public int qDim() {
        return numAttentionHeads * headDim;
    }

    /** Width of a layer's key (and value) projection output: {@code numKeyValueHeads * headDim}. */
    public int kvDim() {
        return numKeyValueHeads * headDim;
    }

    /** Whether attention is limited to the last {@link #slidingWindow()} positions. */
    public boolean hasSlidingWindow() {
        return slidingWindow.isPresent();
    }

    /** Whether generation should stop at {@code tokenId}. */
    public boolean isEosToken(int tokenId) {
        return eosTokenIds.contains(tokenId);
    }

    /**
     * Softmax scale of attention scores, {@code headDim^-0.5}, as transformers uses it (not
     * {@code hiddenSize}-based, which differs when {@code head_dim} is explicit).
     */
    public double attentionScale() {
        return 1.0 / Math.sqrt(headDim);
    }

    /**
     * Number of weights in the checkpoint (embedding, layers, final norm, and the LM head unless
     * tied): 6,738,415,616 for Llama-2-7B, 7,241,732,096 for Mistral-7B. Lets a loader check
     * that the safetensors files hold what the config promises, and size memory before mapping.
     */
    public long parameterCount() {
        long h = hiddenSize;
        long attention = h * qDim() + 2 * h * kvDim() + (long) qDim() * h;
        long mlp = 3 * h * intermediateSize;
        long norms = 2 * h;
        long embedding = (long) vocabSize * h;
        long lmHead = tieWordEmbeddings ? 0 : embedding;
        return embedding + numHiddenLayers * (attention + mlp + norms) + h + lmHead;
    }

    /** Bytes of all weights in their stored {@link #dtype()}. */
    public long weightBytes() {
        return parameterCount() * dtype.bytes();
    }

    static void requirePositive(String field, long value) {
        if (value <= 0) {
            throw new ConfigException(null, field, "field '" + field + "' must be positive, got " + value);
        }
    }

    static void requirePositiveFinite(String field, double value) {
        if (!(value > 0) || Double.isInfinite(value)) {
            throw new ConfigException(null, field,
                    "field '" + field + "' must be a positive finite number, got " + value);
        }
    }
}
