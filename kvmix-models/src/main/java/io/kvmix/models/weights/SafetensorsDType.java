package io.kvmix.models.weights;

import io.kvmix.models.config.DType;

import java.util.Arrays;
import java.util.Optional;
import java.util.stream.Collectors;

/**
 * The safetensors spellings ({@code "dtype": "BF16"}) of the element types this library reads.
 * Integer, fp64 and fp8 tensors exist in the format but never in a Llama/Mistral checkpoint this
 * library can run, so they are rejected by name rather than read.
 */
enum SafetensorsDType {
    F16(DType.FLOAT16),
    BF16(DType.BFLOAT16),
    F32(DType.FLOAT32);

    private final DType dtype;

    SafetensorsDType(DType dtype) {
        this.dtype = dtype;
    }

    DType dtype() {
        return dtype;
    }

    /** The type a header spells {@code code}, if supported. */
    static Optional<DType> fromCode(String code) {
        return Arrays.stream(values()).filter(t -> t.name().equals(code)).map(t -> t.dtype).findFirst();
    }

    /** How a header spells {@code dtype}. */
    static String code(DType dtype) {
        return Arrays.stream(values()).filter(t -> t.dtype == dtype).findFirst().orElseThrow().name();
    }

    /** {@code "F16, BF16, F32"}, for error messages. */
    static String supportedCodes() {
        return Arrays.stream(values()).map(Enum::name).collect(Collectors.joining(", "));
    }
}
