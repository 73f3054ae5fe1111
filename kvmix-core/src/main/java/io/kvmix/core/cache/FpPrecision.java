package io.kvmix.core.cache;

import io.kvmix.core.quant.Fp16;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * How full-precision tokens are stored. fp16 is the contract of every cache and of all byte accounting
 * (DESIGN.md); fp32 is an explicit option of the full-precision cache, for checks against fp32
 * references (it removes the fp16 rounding of keys and values).
 */
public enum FpPrecision {
    FP16(2),
    FP32(4);

    private static final ValueLayout.OfFloat FLOAT = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final int bytes;

    FpPrecision(int bytes) {
        this.bytes = bytes;
    }

    /** Bytes per stored element. */
    public int bytes() {
        return bytes;
    }

    /** The stored element at {@code byteOffset}, as fp32. */
    public float get(MemorySegment segment, long byteOffset) {
        return this == FP16 ? Fp16.get(segment, byteOffset) : segment.get(FLOAT, byteOffset);
    }

    /** Stores {@code count} values of {@code src} from {@code offset} at {@code byteOffset} (fp16: rounded to nearest even). */
    void put(float[] src, int offset, int count, MemorySegment segment, long byteOffset, short[] scratch) {
        if (this == FP32) {
            MemorySegment.copy(src, offset, segment, FLOAT, byteOffset, count);
            return;
        }
        for (int i = 0; i < count; i++) {
            scratch[i] = Fp16.encode(src[offset + i]);
        }
        MemorySegment.copy(scratch, 0, segment, Fp16.LAYOUT, byteOffset, count);
    }
}
