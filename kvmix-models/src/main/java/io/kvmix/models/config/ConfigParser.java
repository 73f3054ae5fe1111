package io.kvmix.models.config;

import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.core.json.JsonReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;

import java.io.IOException;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Objects;
import java.util.Optional;
import java.util.OptionalDouble;
import java.util.OptionalInt;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * Turns {@code config.json} text into a {@link ModelConfig}, reproducing how transformers reads
 * the same file: which spellings mean the same thing, which absent fields get which defaults.
 *
 * <p>Two rules shape it. A field that changes the arithmetic of the forward pass in a way the
 * Java forward does not implement (scaled RoPE, biases, another activation) is rejected by name,
 * because ignoring it would run a different model without saying so. Fields that do not change
 * the arithmetic (training settings, {@code pretraining_tp}, {@code use_cache}, ...) are ignored,
 * because real configs carry many.
 *
 * <p>Every helper throws {@link ConfigException} without a source; {@link #parse} attributes them
 * to the file once, so messages read {@code SOURCE: DETAIL} everywhere.
 */
final class ConfigParser {
    /** transformers' {@code default_theta} for Llama and Mistral. */
    private static final double DEFAULT_ROPE_THETA = 10000.0;
    private static final double DEFAULT_RMS_NORM_EPS = 1e-6;
    private static final boolean DEFAULT_TIE_WORD_EMBEDDINGS = false;
    private static final int DEFAULT_BOS_TOKEN_ID = 1;
    private static final int DEFAULT_EOS_TOKEN_ID = 2;
    private static final String DEFAULT_HIDDEN_ACT = "silu";
    private static final String DEFAULT_ROPE_TYPE = "default";
    /** transformers maps both names to {@code torch.nn.SiLU}. */
    private static final Set<String> SILU_NAMES = Set.of("silu", "swish");

    /**
     * Duplicate keys are an error (Python's json silently keeps the last one, which is how a
     * hand-edited config ends up meaning something other than it appears to); so is trailing text.
     * {@code NaN} and {@code Infinity} are read, as Python's json writes them: they are harmless in
     * ignored fields and fail the range checks of used ones.
     */
    private static final ObjectMapper MAPPER = JsonMapper.builder()
            .enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS)
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .build();

    /** Jackson's "[Source: ...; line: L, column: C]", which it embeds in some reasons. */
    private static final Pattern SOURCE_LOCATION =
            Pattern.compile("\\[Source: [^\\]]*?line: (\\d+), column: (\\d+)\\]");

    private final JsonNode root;

    private ConfigParser(JsonNode root) {
        this.root = root;
    }

    static ModelConfig read(Path configJsonOrModelDir) {
        Objects.requireNonNull(configJsonOrModelDir, "configJsonOrModelDir");
        Path file = Files.isDirectory(configJsonOrModelDir)
                ? configJsonOrModelDir.resolve(ModelConfig.FILE_NAME)
                : configJsonOrModelDir;
        String source = file.toString();
        if (!Files.exists(file)) {
            throw new ConfigException(source, null, "file not found");
        }
        if (!Files.isRegularFile(file)) {
            throw new ConfigException(source, null, "not a regular file");
        }
        String json;
        try {
            json = Files.readString(file, StandardCharsets.UTF_8);
        } catch (CharacterCodingException e) {
            throw new ConfigException(source, null, "not valid UTF-8 text", e);
        } catch (NoSuchFileException e) {
            throw new ConfigException(source, null, "file not found", e);
        } catch (IOException e) {
            throw new ConfigException(source, null, "cannot read: " + e, e);
        }
        return parse(json, source);
    }

    static ModelConfig parse(String json, String sourceName) {
        Objects.requireNonNull(json, "json");
        Objects.requireNonNull(sourceName, "sourceName");
        try {
            return new ConfigParser(parseTree(json)).toModelConfig();
        } catch (ConfigException e) {
            throw e.source() == null ? e.withSource(sourceName) : e;
        }
    }

    private static JsonNode parseTree(String json) {
        JsonNode tree;
        try {
            tree = MAPPER.readTree(json);
        } catch (JsonProcessingException e) {
            JsonLocation at = e.getLocation();
            String where = at == null ? "" : " at line " + at.getLineNr() + ", column " + at.getColumnNr();
            throw new ConfigException(null, null, "malformed JSON" + where + ": " + jacksonReason(e), e);
        }
        if (tree == null || tree.isMissingNode()) {
            throw new ConfigException(null, null, "malformed JSON: the text is empty");
        }
        if (!tree.isObject()) {
            throw new ConfigException(null, null, "top level must be a JSON object, got " + describe(tree));
        }
        return tree;
    }

    /** Jackson's reason without its embedded source locations, which the message gives already. */
    private static String jacksonReason(JsonProcessingException e) {
        String reason = e.getOriginalMessage();
        if (reason == null) {
            return e.getClass().getSimpleName();
        }
        int newline = reason.indexOf('\n');
        if (newline >= 0) {
            reason = reason.substring(0, newline);
        }
        if (reason.startsWith("Trailing token")) {
            return "unexpected text after the top-level object";
        }
        return SOURCE_LOCATION.matcher(reason).replaceAll("line $1, column $2").strip();
    }

    private ModelConfig toModelConfig() {
        ModelType modelType = modelType();

        int vocabSize = requiredPositiveInt("vocab_size");
        int hiddenSize = requiredPositiveInt("hidden_size");
        int intermediateSize = requiredPositiveInt("intermediate_size");
        int numHiddenLayers = requiredPositiveInt("num_hidden_layers");
        int numAttentionHeads = requiredPositiveInt("num_attention_heads");
        int numKeyValueHeads = numKeyValueHeads(modelType, numAttentionHeads);
        int headDim = headDim(hiddenSize, numAttentionHeads);

        double ropeTheta = ropeTheta();
        rejectUnsupportedArithmetic();

        int maxPositionEmbeddings = optionalPositiveInt("max_position_embeddings")
                .orElse(modelType.defaultMaxPositionEmbeddings());
        double rmsNormEps = optionalNumber(root, "rms_norm_eps").orElse(DEFAULT_RMS_NORM_EPS);
        OptionalInt slidingWindow = slidingWindow(modelType);
        boolean tieWordEmbeddings = optionalBoolean("tie_word_embeddings").orElse(DEFAULT_TIE_WORD_EMBEDDINGS);
        DType dtype = dtype();
        OptionalInt bosTokenId = root.has("bos_token_id")
                ? optionalInt(root, "bos_token_id")
                : OptionalInt.of(DEFAULT_BOS_TOKEN_ID);
        List<Integer> eosTokenIds = eosTokenIds();
        OptionalInt padTokenId = optionalInt(root, "pad_token_id");

        return new ModelConfig(modelType, vocabSize, hiddenSize, intermediateSize, numHiddenLayers,
                numAttentionHeads, numKeyValueHeads, headDim, maxPositionEmbeddings, ropeTheta, rmsNormEps,
                slidingWindow, tieWordEmbeddings, dtype, bosTokenId, eosTokenIds, padTokenId);
    }

    /**
     * The family, from {@code model_type} and/or {@code architectures}; when both are given they
     * must agree, and every listed architecture must be a supported causal LM (a
     * {@code LlamaForSequenceClassification} checkpoint has no LM head to generate with).
     */
    private ModelType modelType() {
        Optional<String> typeName = optionalString(root, "model_type");
        Optional<ModelType> fromType = typeName.map(name -> ModelType.fromHfName(name).orElseThrow(
                () -> new ConfigException(null, "model_type", "model_type '" + name
                        + "' is not supported (supported: " + String.join(", ", ModelType.hfNames()) + ")")));

        ModelType fromArchitectures = null;
        JsonNode architectures = value(root, "architectures");
        if (architectures != null) {
            if (!architectures.isArray()) {
                throw typeError("architectures", "an array of strings", architectures);
            }
            for (int i = 0; i < architectures.size(); i++) {
                String field = "architectures[" + i + "]";
                JsonNode element = architectures.get(i);
                if (!element.isTextual()) {
                    throw typeError(field, "a string", element);
                }
                String name = element.textValue();
                ModelType type = ModelType.fromArchitecture(name).orElseThrow(() -> new ConfigException(null,
                        "architectures", "architecture '" + name + "' is not supported (supported: "
                        + String.join(", ", ModelType.architectures()) + ")"));
                ModelType expected = fromType.orElse(fromArchitectures);
                if (expected != null && expected != type) {
                    String against = fromType.isPresent()
                            ? "model_type '" + expected.hfName() + "'"
                            : "architecture '" + expected.architecture() + "'";
                    throw new ConfigException(null, "architectures",
                            "architecture '" + name + "' does not match " + against);
                }
                fromArchitectures = type;
            }
        }
        if (fromType.isPresent()) {
            return fromType.get();
        }
        if (fromArchitectures != null) {
            return fromArchitectures;
        }
        throw new ConfigException(null, "model_type", "required field 'model_type' is missing"
                + " (architectures does not name the model either)");
    }

    /**
     * Absent: the family default (Llama: the query heads; Mistral: 8). Null: the query heads
     * (transformers' backward-compatibility rule for both families).
     */
    private int numKeyValueHeads(ModelType modelType, int numAttentionHeads) {
        String field = "num_key_value_heads";
        if (!root.has(field)) {
            int heads = modelType.defaultKeyValueHeads(numAttentionHeads);
            if (modelType.hasFixedDefaultKeyValueHeads() && numAttentionHeads % heads != 0) {
                throw new ConfigException(null, field, "num_attention_heads (" + numAttentionHeads
                        + ") is not divisible by num_key_value_heads (" + heads + ", the " + modelType.hfName()
                        + " default when the field is absent)");
            }
            return heads;
        }
        OptionalInt given = optionalInt(root, field);
        if (given.isEmpty()) {
            return numAttentionHeads;
        }
        ModelConfig.requirePositive(field, given.getAsInt());
        return given.getAsInt();
    }

    /** Absent or null: {@code hidden_size / num_attention_heads}, which must then be exact. */
    private int headDim(int hiddenSize, int numAttentionHeads) {
        OptionalInt given = optionalPositiveInt("head_dim");
        if (given.isPresent()) {
            return given.getAsInt();
        }
        if (hiddenSize % numAttentionHeads != 0) {
            throw new ConfigException(null, "hidden_size", "hidden_size (" + hiddenSize
                    + ") is not divisible by num_attention_heads (" + numAttentionHeads + ") and head_dim is absent");
        }
        return hiddenSize / numAttentionHeads;
    }

    /**
     * The RoPE base, from any of the three places configs put it: top-level {@code rope_theta}
     * (transformers 4), {@code rope_parameters.rope_theta} (transformers 5), or inside
     * {@code rope_scaling}. Both dictionaries must describe plain ("default") RoPE: any scaled
     * variant changes the frequencies and is rejected by name. Where several places give a theta
     * they must agree (transformers would silently prefer the dictionary's).
     */
    private double ropeTheta() {
        List<String> thetaFields = new ArrayList<>();
        List<Double> thetas = new ArrayList<>();
        OptionalDouble topLevel = optionalNumber(root, "rope_theta");
        if (topLevel.isPresent()) {
            thetaFields.add("rope_theta");
            thetas.add(topLevel.getAsDouble());
        }
        for (String key : List.of("rope_parameters", "rope_scaling")) {
            JsonNode rope = value(root, key);
            if (rope == null) {
                continue;
            }
            if (!rope.isObject()) {
                throw typeError(key, "an object", rope);
            }
            if (rope.isEmpty()) {
                continue;
            }
            String type = ropeType(rope, key);
            if (!DEFAULT_ROPE_TYPE.equals(type)) {
                throw new ConfigException(null, key, key + " type '" + type + "' is not supported");
            }
            rejectPartialRotary(rope, key + ".partial_rotary_factor");
            OptionalDouble theta = optionalNumber(rope, key + ".rope_theta", "rope_theta");
            if (theta.isPresent()) {
                thetaFields.add(key + ".rope_theta");
                thetas.add(theta.getAsDouble());
            }
        }
        for (int i = 1; i < thetas.size(); i++) {
            if (!thetas.get(i).equals(thetas.getFirst())) {
                throw new ConfigException(null, thetaFields.get(i), thetaFields.getFirst() + " (" + thetas.getFirst()
                        + ") and " + thetaFields.get(i) + " (" + thetas.get(i) + ") disagree");
            }
        }
        double theta = thetas.isEmpty() ? DEFAULT_ROPE_THETA : thetas.getFirst();
        ModelConfig.requirePositiveFinite(thetaFields.isEmpty() ? "rope_theta" : thetaFields.getFirst(), theta);
        return theta;
    }

    /**
     * {@code rope_type}, or the older {@code type}. A dictionary naming neither is "default" only
     * if it carries nothing but a theta; otherwise it is ambiguous (scaling keys without a type)
     * and rejected rather than guessed.
     */
    private static String ropeType(JsonNode rope, String key) {
        Optional<String> type = optionalString(rope, key + ".rope_type", "rope_type");
        if (type.isEmpty()) {
            type = optionalString(rope, key + ".type", "type");
        }
        if (type.isPresent()) {
            return type.get();
        }
        List<String> otherKeys = new ArrayList<>();
        rope.fieldNames().forEachRemaining(name -> {
            if (!name.equals("rope_theta") && !name.equals("rope_type") && !name.equals("type")) {
                otherKeys.add(name);
            }
        });
        if (otherKeys.isEmpty()) {
            return DEFAULT_ROPE_TYPE;
        }
        throw new ConfigException(null, key + ".rope_type", key + " names no rope_type but sets "
                + String.join(", ", otherKeys));
    }

    /** Partial rotary embeddings rotate only part of each head; Llama/Mistral rotate all of it. */
    private static void rejectPartialRotary(JsonNode node, String field) {
        String key = field.substring(field.lastIndexOf('.') + 1);
        OptionalDouble factor = optionalNumber(node, field, key);
        if (factor.isPresent() && factor.getAsDouble() != 1.0) {
            throw new ConfigException(null, field, field + " " + factor.getAsDouble() + " is not supported");
        }
    }

    /** Settings that would make the Java forward compute something other than the checkpoint's model. */
    private void rejectUnsupportedArithmetic() {
        JsonNode quantization = value(root, "quantization_config");
        if (quantization != null) {
            String method = quantization.isObject() && quantization.path("quant_method").isTextual()
                    ? " (quant_method '" + quantization.get("quant_method").textValue() + "')"
                    : "";
            throw new ConfigException(null, "quantization_config", "quantization_config" + method
                    + " is not supported: the checkpoint's weights are quantized");
        }
        rejectPartialRotary(root, "partial_rotary_factor");
        String act = optionalString(root, "hidden_act").orElse(DEFAULT_HIDDEN_ACT);
        if (!SILU_NAMES.contains(act)) {
            throw new ConfigException(null, "hidden_act",
                    "hidden_act '" + act + "' is not supported (supported: silu)");
        }
        for (String field : List.of("attention_bias", "mlp_bias")) {
            if (optionalBoolean(field).orElse(false)) {
                throw new ConfigException(null, field, field + "=true is not supported");
            }
        }
        OptionalInt tensorParallel = optionalInt(root, "pretraining_tp");
        if (tensorParallel.isPresent()) {
            ModelConfig.requirePositive("pretraining_tp", tensorParallel.getAsInt());
        }
    }

    /**
     * Mistral: absent means transformers' default 4096, null means full attention. Llama ignores
     * the field, as transformers' Llama attention does.
     */
    private OptionalInt slidingWindow(ModelType modelType) {
        if (!modelType.supportsSlidingWindow()) {
            return OptionalInt.empty();
        }
        if (!root.has("sliding_window")) {
            return modelType.defaultSlidingWindow();
        }
        OptionalInt window = optionalInt(root, "sliding_window");
        window.ifPresent(w -> ModelConfig.requirePositive("sliding_window", w));
        return window;
    }

    /** {@code dtype} (transformers 5) or {@code torch_dtype} (4); when both are given they must agree. */
    private DType dtype() {
        Optional<DType> modern = dtypeField("dtype");
        Optional<DType> legacy = dtypeField("torch_dtype");
        if (modern.isPresent() && legacy.isPresent() && modern.get() != legacy.get()) {
            throw new ConfigException(null, "dtype", "dtype '" + modern.get().hfName() + "' and torch_dtype '"
                    + legacy.get().hfName() + "' disagree");
        }
        return modern.or(() -> legacy).orElse(DType.FLOAT32);
    }

    private Optional<DType> dtypeField(String field) {
        return optionalString(root, field).map(name -> DType.fromHfName(name).orElseThrow(
                () -> new ConfigException(null, field, field + " '" + name + "' is not supported (supported: "
                        + String.join(", ", DType.hfNames()) + ")")));
    }

    /** Absent: transformers' default [2]. Null: none. An int or a list of ints. */
    private List<Integer> eosTokenIds() {
        String field = "eos_token_id";
        if (!root.has(field)) {
            return List.of(DEFAULT_EOS_TOKEN_ID);
        }
        JsonNode node = value(root, field);
        if (node == null) {
            return List.of();
        }
        if (!node.isArray()) {
            return List.of(intValue(node, field));
        }
        List<Integer> ids = new ArrayList<>(node.size());
        for (int i = 0; i < node.size(); i++) {
            ids.add(intValue(node.get(i), field + "[" + i + "]"));
        }
        return ids;
    }

    private int requiredPositiveInt(String field) {
        if (!root.has(field)) {
            throw new ConfigException(null, field, "required field '" + field + "' is missing");
        }
        JsonNode node = value(root, field);
        if (node == null) {
            throw new ConfigException(null, field, "required field '" + field + "' is null");
        }
        int value = intValue(node, field);
        ModelConfig.requirePositive(field, value);
        return value;
    }

    private OptionalInt optionalPositiveInt(String field) {
        OptionalInt value = optionalInt(root, field);
        value.ifPresent(v -> ModelConfig.requirePositive(field, v));
        return value;
    }

    private Optional<Boolean> optionalBoolean(String field) {
        JsonNode node = value(root, field);
        if (node == null) {
            return Optional.empty();
        }
        if (!node.isBoolean()) {
            throw typeError(field, "a boolean", node);
        }
        return Optional.of(node.booleanValue());
    }

    private static OptionalInt optionalInt(JsonNode parent, String field) {
        JsonNode node = value(parent, field);
        return node == null ? OptionalInt.empty() : OptionalInt.of(intValue(node, field));
    }

    private static int intValue(JsonNode node, String field) {
        if (!node.isIntegralNumber()) {
            throw typeError(field, "an integer", node);
        }
        if (!node.canConvertToInt()) {
            throw typeError(field, "a 32-bit integer", node);
        }
        return node.intValue();
    }

    private static OptionalDouble optionalNumber(JsonNode parent, String field) {
        return optionalNumber(parent, field, field);
    }

    /** A number under {@code key} of {@code parent}; {@code field} is its full name for messages. */
    private static OptionalDouble optionalNumber(JsonNode parent, String field, String key) {
        JsonNode node = value(parent, key);
        if (node == null) {
            return OptionalDouble.empty();
        }
        if (!node.isNumber()) {
            throw typeError(field, "a number", node);
        }
        return OptionalDouble.of(node.doubleValue());
    }

    private static Optional<String> optionalString(JsonNode parent, String field) {
        return optionalString(parent, field, field);
    }

    private static Optional<String> optionalString(JsonNode parent, String field, String key) {
        JsonNode node = value(parent, key);
        if (node == null) {
            return Optional.empty();
        }
        if (!node.isTextual()) {
            throw typeError(field, "a string", node);
        }
        return Optional.of(node.textValue());
    }

    /**
     * The value under {@code key}, or {@code null} when absent or JSON null: for fields with a
     * default, an explicit null reads as "not given".
     */
    private static JsonNode value(JsonNode parent, String key) {
        JsonNode node = parent.get(key);
        return node == null || node.isNull() ? null : node;
    }

    private static ConfigException typeError(String field, String expected, JsonNode got) {
        return new ConfigException(null, field, "field '" + field + "' must be " + expected + ", got " + describe(got));
    }

    /** A JSON value as a message shows it: its JSON type and, for scalars, the value itself. */
    private static String describe(JsonNode node) {
        return switch (node.getNodeType()) {
            case STRING -> "string " + node;
            case NUMBER -> "number " + node.asText();
            case BOOLEAN -> "boolean " + node.asText();
            case ARRAY -> "an array";
            case OBJECT -> "an object";
            case NULL -> "null";
            default -> node.getNodeType().name().toLowerCase(Locale.ROOT);
        };
    }
}
