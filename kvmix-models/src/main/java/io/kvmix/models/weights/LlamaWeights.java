package io.kvmix.models.weights;

import io.kvmix.models.config.DType;
import io.kvmix.models.config.ModelConfig;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.function.Function;
import java.util.function.ToIntFunction;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The weights of a {@code LlamaForCausalLM} / {@code MistralForCausalLM}, as memory-mapped tensors
 * checked name by name and shape by shape against a {@link ModelConfig}.
 *
 * <p>Checking everything when the model loads is what makes the forward pass safe to write
 * without checks: a config that disagrees with its checkpoint (another model size, GQA vs MHA, a
 * tied head) fails here with the file, the tensor and both shapes, not as garbage logits. A tensor
 * the forward would ignore is an error too: a bias means the checkpoint is a model this library
 * does not implement, and running it without its biases would be silently wrong.
 *
 * <p>Tensors keep their stored types, which may differ from tensor to tensor and from the config's
 * {@code dtype}. The holder is immutable; the tensors are readable while the {@link Checkpoint}
 * they came from is open (see {@link #open(Path)} for a holder that owns it).
 */
public final class LlamaWeights {
    private static final Logger LOG = LoggerFactory.getLogger(LlamaWeights.class);

    /**
     * Buffers that older transformers versions saved with the weights. They are recomputed from
     * {@code rope_theta}, so they are ignored rather than rejected.
     */
    private static final Pattern IGNORED = Pattern.compile("model\\.layers\\.\\d+\\.self_attn\\.rotary_emb\\.inv_freq");
    private static final Pattern LAYER_INDEX = Pattern.compile("model\\.layers\\.(\\d{1,9})\\..*");

    private static final Expected EMBEDDING = new Expected("model.embed_tokens.weight", Dim.VOCAB, Dim.HIDDEN);
    private static final Expected FINAL_NORM = new Expected("model.norm.weight", Dim.HIDDEN);
    private static final Expected LM_HEAD = new Expected("lm_head.weight", Dim.VOCAB, Dim.HIDDEN);

    /**
     * One decoder layer. Shapes are PyTorch's {@code [out, in]}; {@code qDim = heads * head_dim},
     * {@code kvDim = kv_heads * head_dim}.
     *
     * @param attentionNorm {@code input_layernorm.weight}, RMSNorm before attention      (hidden)
     * @param qProj         {@code self_attn.q_proj.weight}                                 (qDim, hidden)
     * @param kProj         {@code self_attn.k_proj.weight}                                 (kvDim, hidden)
     * @param vProj         {@code self_attn.v_proj.weight}                                 (kvDim, hidden)
     * @param oProj         {@code self_attn.o_proj.weight}                                 (hidden, qDim)
     * @param mlpNorm       {@code post_attention_layernorm.weight}, RMSNorm before the MLP (hidden)
     * @param gateProj      {@code mlp.gate_proj.weight}                                    (intermediate, hidden)
     * @param upProj        {@code mlp.up_proj.weight}                                      (intermediate, hidden)
     * @param downProj      {@code mlp.down_proj.weight}                                    (hidden, intermediate)
     */
    public record Layer(Tensor attentionNorm, Tensor qProj, Tensor kProj, Tensor vProj, Tensor oProj,
                        Tensor mlpNorm, Tensor gateProj, Tensor upProj, Tensor downProj) {
        public Layer {
            Stream.of(attentionNorm, qProj, kProj, vProj, oProj, mlpNorm, gateProj, upProj, downProj)
                    .forEach(Objects::requireNonNull);
        }
    }

    /** A config-derived dimension, with the config field names that define it (for messages). */
    private enum Dim {
        VOCAB("vocab_size", ModelConfig::vocabSize),
        HIDDEN("hidden_size", ModelConfig::hiddenSize),
        INTERMEDIATE("intermediate_size", ModelConfig::intermediateSize),
        Q_DIM("num_attention_heads * head_dim", ModelConfig::qDim),
        KV_DIM("num_key_value_heads * head_dim", ModelConfig::kvDim);

        private final String formula;
        private final ToIntFunction<ModelConfig> size;

        Dim(String formula, ToIntFunction<ModelConfig> size) {
            this.formula = formula;
            this.size = size;
        }
    }

    /** A tensor the model needs: its checkpoint name and its shape in terms of the config. */
    private record Expected(String name, List<Dim> dims) {
        Expected(String name, Dim... dims) {
            this(name, List.of(dims));
        }

        long[] shape(ModelConfig config) {
            return dims.stream().mapToLong(dim -> dim.size.applyAsInt(config)).toArray();
        }

        /** {@code [num_key_value_heads * head_dim, hidden_size]}. */
        String formula() {
            return dims.stream().map(dim -> dim.formula).collect(Collectors.joining(", ", "[", "]"));
        }
    }

    /** The tensors of layer {@code i} are {@code model.layers.i.SUFFIX}; order matches {@link Layer}. */
    private enum LayerPart {
        ATTENTION_NORM("input_layernorm.weight", Dim.HIDDEN),
        Q_PROJ("self_attn.q_proj.weight", Dim.Q_DIM, Dim.HIDDEN),
        K_PROJ("self_attn.k_proj.weight", Dim.KV_DIM, Dim.HIDDEN),
        V_PROJ("self_attn.v_proj.weight", Dim.KV_DIM, Dim.HIDDEN),
        O_PROJ("self_attn.o_proj.weight", Dim.HIDDEN, Dim.Q_DIM),
        MLP_NORM("post_attention_layernorm.weight", Dim.HIDDEN),
        GATE_PROJ("mlp.gate_proj.weight", Dim.INTERMEDIATE, Dim.HIDDEN),
        UP_PROJ("mlp.up_proj.weight", Dim.INTERMEDIATE, Dim.HIDDEN),
        DOWN_PROJ("mlp.down_proj.weight", Dim.HIDDEN, Dim.INTERMEDIATE);

        private final String suffix;
        private final Dim[] dims;

        LayerPart(String suffix, Dim... dims) {
            this.suffix = suffix;
            this.dims = dims;
        }

        Expected inLayer(int layer) {
            return new Expected("model.layers." + layer + "." + suffix, dims);
        }
    }

    private final ModelConfig config;
    private final Tensor embedding;   // (vocab, hidden)
    private final List<Layer> layers; // (layer)
    private final Tensor finalNorm;   // (hidden)
    private final Tensor lmHead;      // (vocab, hidden); the embedding itself when tied and not stored

    private LlamaWeights(ModelConfig config, Tensor embedding, List<Layer> layers, Tensor finalNorm, Tensor lmHead) {
        this.config = config;
        this.embedding = embedding;
        this.layers = List.copyOf(layers);
        this.finalNorm = finalNorm;
        this.lmHead = lmHead;
    }

    /**
     * Takes every weight of the model described by {@code config} from {@code checkpoint},
     * checking names and shapes. With {@code tie_word_embeddings} the LM head is the embedding,
     * unless the checkpoint stores an {@code lm_head.weight} of the same shape anyway (then that is
     * used, as transformers would load it).
     *
     * @throws CheckpointException for a missing tensor (naming the checkpoint's
     *                             {@link Checkpoint#source()}), a tensor of the wrong shape (naming
     *                             its file, expected and actual shape), or an unexpected tensor such
     *                             as an attention bias (naming its file)
     */
    public static LlamaWeights load(ModelConfig config, Checkpoint checkpoint) {
        Objects.requireNonNull(config, "config");
        Objects.requireNonNull(checkpoint, "checkpoint");
        boolean lmHeadStored = !config.tieWordEmbeddings() || checkpoint.contains(LM_HEAD.name());
        List<Expected> expected = expectedTensors(config, lmHeadStored);
        requirePresent(config, checkpoint, expected);

        Map<String, Tensor> taken = new HashMap<>();
        for (Expected spec : expected) {
            taken.put(spec.name(), requireShape(config, checkpoint.tensor(spec.name()), spec));
        }
        rejectUnexpected(config, checkpoint, taken);
        logStoredTypes(config, checkpoint, taken.values());

        List<Layer> layers = new ArrayList<>(config.numHiddenLayers());
        for (int i = 0; i < config.numHiddenLayers(); i++) {
            int layer = i;
            Function<LayerPart, Tensor> part = p -> taken.get(p.inLayer(layer).name());
            layers.add(new Layer(part.apply(LayerPart.ATTENTION_NORM), part.apply(LayerPart.Q_PROJ),
                    part.apply(LayerPart.K_PROJ), part.apply(LayerPart.V_PROJ), part.apply(LayerPart.O_PROJ),
                    part.apply(LayerPart.MLP_NORM), part.apply(LayerPart.GATE_PROJ), part.apply(LayerPart.UP_PROJ),
                    part.apply(LayerPart.DOWN_PROJ)));
        }
        Tensor embedding = taken.get(EMBEDDING.name());
        Tensor lmHead = lmHeadStored ? taken.get(LM_HEAD.name()) : embedding;
        return new LlamaWeights(config, embedding, layers, taken.get(FINAL_NORM.name()), lmHead);
    }

    /**
     * Maps {@code modelDir} and loads its weights against its {@code config.json}. The result owns
     * the mapping: close it when done with the weights.
     *
     * @throws io.kvmix.models.config.ConfigException if {@code config.json} is missing or invalid
     * @throws CheckpointException                    if the checkpoint is missing, invalid or does not match the config
     */
    public static MappedModel open(Path modelDir) {
        ModelConfig config = ModelConfig.read(modelDir);
        Checkpoint checkpoint = Checkpoint.open(modelDir);
        try {
            return new MappedModel(config, checkpoint, load(config, checkpoint));
        } catch (RuntimeException e) {
            checkpoint.close();
            throw e;
        }
    }

    /** Every tensor the model reads, in model order: embedding, layer by layer, final norm, LM head. */
    private static List<Expected> expectedTensors(ModelConfig config, boolean lmHeadStored) {
        List<Expected> expected = new ArrayList<>();
        expected.add(EMBEDDING);
        for (int layer = 0; layer < config.numHiddenLayers(); layer++) {
            for (LayerPart part : LayerPart.values()) {
                expected.add(part.inLayer(layer));
            }
        }
        expected.add(FINAL_NORM);
        if (lmHeadStored) {
            expected.add(LM_HEAD);
        }
        return expected;
    }

    /** Names the first missing tensor in model order and counts the rest: one line, yet the whole picture. */
    private static void requirePresent(ModelConfig config, Checkpoint checkpoint, List<Expected> expected) {
        List<Expected> missing = expected.stream().filter(spec -> !checkpoint.contains(spec.name())).toList();
        if (missing.isEmpty()) {
            return;
        }
        Expected first = missing.getFirst();
        String detail = "missing (expected shape " + Arrays.toString(first.shape(config)) + " = " + first.formula()
                + ")";
        if (first.equals(LM_HEAD)) {
            detail += "; config.json has tie_word_embeddings false, so the LM head must be stored";
        }
        if (missing.size() > 1) {
            detail += "; " + (missing.size() - 1) + " more expected tensor(s) are missing too";
        }
        throw new CheckpointException(checkpoint.source(), first.name(), detail);
    }

    private static Tensor requireShape(ModelConfig config, Tensor tensor, Expected spec) {
        long[] shape = spec.shape(config);
        if (!Arrays.equals(tensor.shape(), shape)) {
            throw new CheckpointException(tensor.sourceFile(), tensor.name(), "shape "
                    + Arrays.toString(tensor.shape()) + ", expected " + Arrays.toString(shape) + " = "
                    + spec.formula() + " from the config");
        }
        return tensor;
    }

    private static void rejectUnexpected(ModelConfig config, Checkpoint checkpoint, Map<String, Tensor> taken) {
        for (String name : checkpoint.names()) {
            if (taken.containsKey(name)) {
                continue;
            }
            if (IGNORED.matcher(name).matches()) {
                LOG.debug("{}: ignoring '{}', which is recomputed from the config", checkpoint.source(), name);
                continue;
            }
            throw new CheckpointException(checkpoint.tensor(name).sourceFile(), name,
                    "unexpected tensor: " + whyUnexpected(config, name));
        }
    }

    private static String whyUnexpected(ModelConfig config, String name) {
        if (name.endsWith(".bias")) {
            String where = name.contains(".self_attn.") ? "attention biases" : "biases";
            return where + " are not supported (Llama and Mistral have none; this is another model)";
        }
        Matcher layer = LAYER_INDEX.matcher(name);
        if (layer.matches() && Integer.parseInt(layer.group(1)) >= config.numHiddenLayers()) {
            return "layer " + layer.group(1) + " does not exist, config.json has num_hidden_layers "
                    + config.numHiddenLayers();
        }
        return "not a weight of " + config.modelType().architecture();
    }

    /** Stored types that differ from the config's dtype are normal (bf16 files of fp16 configs); say so quietly. */
    private static void logStoredTypes(ModelConfig config, Checkpoint checkpoint, Iterable<Tensor> tensors) {
        if (!LOG.isDebugEnabled()) {
            return;
        }
        Map<DType, Integer> countByType = new EnumMap<>(DType.class);
        tensors.forEach(tensor -> countByType.merge(tensor.dtype(), 1, Integer::sum));
        if (!countByType.keySet().equals(Set.of(config.dtype()))) {
            LOG.debug("{}: tensors stored as {} while config.json says {}", checkpoint.source(), countByType,
                    config.dtype().hfName());
        }
    }

    public ModelConfig config() {
        return config;
    }

    /** {@code model.embed_tokens.weight} (vocab, hidden): row {@code t} is token {@code t}'s input vector. */
    public Tensor embedding() {
        return embedding;
    }

    /** The decoder layers, {@code config().numHiddenLayers()} of them, input side first. */
    public List<Layer> layers() {
        return layers;
    }

    public Layer layer(int index) {
        return layers.get(index);
    }

    /** {@code model.norm.weight} (hidden): RMSNorm after the last layer. */
    public Tensor finalNorm() {
        return finalNorm;
    }

    /**
     * {@code lm_head.weight} (vocab, hidden): row {@code t} dotted with the final hidden state is
     * token {@code t}'s logit. The same tensor as {@link #embedding()} when the embeddings are
     * tied and the checkpoint does not store a separate head.
     */
    public Tensor lmHead() {
        return lmHead;
    }

    /** Whether {@link #lmHead()} is the embedding matrix itself. */
    public boolean lmHeadIsEmbedding() {
        return lmHead == embedding;
    }
}
