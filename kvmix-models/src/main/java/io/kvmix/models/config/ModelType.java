package io.kvmix.models.config;

import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.OptionalInt;

/**
 * The model families this library runs, with the defaults Hugging Face transformers applies when
 * a {@code config.json} leaves a field out.
 *
 * <p>The defaults live here, per family, because they differ: transformers' {@code MistralConfig}
 * defaults {@code num_key_value_heads} to 8 and {@code sliding_window} to 4096, while
 * {@code LlamaConfig} uses full multi-head attention and has no sliding window at all. Reading a
 * config exactly as transformers does is what lets the Java forward pass be checked against
 * transformers goldens.
 */
public enum ModelType {
    /** Llama 1/2/3 style decoder ({@code model_type "llama"}, {@code LlamaForCausalLM}). */
    LLAMA("llama", "LlamaForCausalLM", 2048, OptionalInt.empty(), OptionalInt.empty()),
    /** Mistral style decoder ({@code model_type "mistral"}, {@code MistralForCausalLM}). */
    MISTRAL("mistral", "MistralForCausalLM", 4096 * 32, OptionalInt.of(8), OptionalInt.of(4096));

    private final String hfName;
    private final String architecture;
    private final int defaultMaxPositionEmbeddings;
    private final OptionalInt defaultKeyValueHeads;
    private final OptionalInt defaultSlidingWindow;

    ModelType(String hfName, String architecture, int defaultMaxPositionEmbeddings,
              OptionalInt defaultKeyValueHeads, OptionalInt defaultSlidingWindow) {
        this.hfName = hfName;
        this.architecture = architecture;
        this.defaultMaxPositionEmbeddings = defaultMaxPositionEmbeddings;
        this.defaultKeyValueHeads = defaultKeyValueHeads;
        this.defaultSlidingWindow = defaultSlidingWindow;
    }

    /** The {@code model_type} string of {@code config.json}. */
    public String hfName() {
        return hfName;
    }

    /** The causal-LM class name listed in {@code architectures}. */
    public String architecture() {
        return architecture;
    }

    /** {@code max_position_embeddings} when the field is absent (Llama 2048, Mistral 4096 * 32). */
    public int defaultMaxPositionEmbeddings() {
        return defaultMaxPositionEmbeddings;
    }

    /**
     * {@code num_key_value_heads} when the field is absent: the number of query heads for Llama
     * (multi-head attention), 8 for Mistral. An explicit {@code null} means "same as the query
     * heads" for both families.
     */
    public int defaultKeyValueHeads(int numAttentionHeads) {
        return defaultKeyValueHeads.orElse(numAttentionHeads);
    }

    /** Whether the family's default for an absent {@code num_key_value_heads} is a fixed number. */
    boolean hasFixedDefaultKeyValueHeads() {
        return defaultKeyValueHeads.isPresent();
    }

    /**
     * {@code sliding_window} when the field is absent: none for Llama (which ignores the field
     * entirely), 4096 for Mistral. An explicit {@code null} means no window.
     */
    public OptionalInt defaultSlidingWindow() {
        return defaultSlidingWindow;
    }

    /** Whether the family reads {@code sliding_window} at all (Llama attention never windows). */
    public boolean supportsSlidingWindow() {
        return this == MISTRAL;
    }

    /** The family whose {@code model_type} is {@code name}, if supported. */
    public static Optional<ModelType> fromHfName(String name) {
        return Arrays.stream(values()).filter(t -> t.hfName.equals(name)).findFirst();
    }

    /** The family whose causal-LM class is {@code architecture}, if supported. */
    public static Optional<ModelType> fromArchitecture(String architecture) {
        return Arrays.stream(values()).filter(t -> t.architecture.equals(architecture)).findFirst();
    }

    static List<String> hfNames() {
        return Arrays.stream(values()).map(ModelType::hfName).toList();
    }

    static List<String> architectures() {
        return Arrays.stream(values()).map(ModelType::architecture).toList();
    }
}
