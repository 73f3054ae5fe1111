package io.kvmix.core.quant;

/** Input that cannot be quantized (non-finite value, scale overflowing fp16); names the position. */
public final class QuantizationException extends IllegalArgumentException {
    public QuantizationException(String message) {
        super(message);
    }
}
