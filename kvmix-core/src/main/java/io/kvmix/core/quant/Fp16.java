package io.kvmix.core.quant;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/** IEEE half precision helpers; the cache stores keys, values, scales and mins as fp16 (little-endian). */
public final class Fp16 {
    /** Little-endian, byte-aligned fp16 element layout used for every fp16 array in FORMAT.md. */
    public static final ValueLayout.OfShort LAYOUT = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    /** Little-endian 32-bit code word layout. */
    public static final ValueLayout.OfInt WORD = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    /** fp32 values at or above this magnitude round to infinity in fp16. */
    public static final float OVERFLOW_THRESHOLD = 65520f;

    private Fp16() {
    }

    /** fp32 -> fp16 bits, round to nearest even. */
    public static short encode(float x) {
        return Float.floatToFloat16(x);
    }

    public static float decode(short bits) {
        return Float.float16ToFloat(bits);
    }

    /** fp32 -> fp16 -> fp32: the value the cache will hold. */
    public static float round(float x) {
        return decode(encode(x));
    }

    /** True when {@code x} is finite and stays finite after rounding to fp16. */
    public static boolean representable(float x) {
        return Math.abs(x) < OVERFLOW_THRESHOLD;
    }

    public static float get(MemorySegment segment, long byteOffset) {
        return decode(segment.get(LAYOUT, byteOffset));
    }

    public static void set(MemorySegment segment, long byteOffset, float x) {
        segment.set(LAYOUT, byteOffset, encode(x));
    }
}
