package io.kvmix.models.config;

import java.util.Arrays;
import java.util.List;
import java.util.Optional;

/**
 * The floating-point type a checkpoint declares for its weights ({@code torch_dtype}, or
 * {@code dtype} in transformers 5).
 *
 * <p>It tells the loader how to read the memory-mapped tensors (weights stay in their stored
 * type; see DESIGN.md) and is the default compute/cache precision a user would expect.
 * An absent field means {@link #FLOAT32}, as transformers assumes.
 */
public enum DType {
    FLOAT16("float16", 2),
    BFLOAT16("bfloat16", 2),
    FLOAT32("float32", 4);

    private final String hfName;
    private final int bytes;

    DType(String hfName, int bytes) {
        this.hfName = hfName;
        this.bytes = bytes;
    }

    /** The spelling used in {@code config.json}. */
    public String hfName() {
        return hfName;
    }

    /** Bytes per element. */
    public int bytes() {
        return bytes;
    }

    /** The type spelled {@code name} in {@code config.json}, if supported. */
    public static Optional<DType> fromHfName(String name) {
        return Arrays.stream(values()).filter(t -> t.hfName.equals(name)).findFirst();
    }

    static List<String> hfNames() {
        return Arrays.stream(values()).map(DType::hfName).toList();
    }
}
