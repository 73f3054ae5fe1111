package io.kvmix.core.quant;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;

/**
 * Vector API species used by the CPU kernels, and an exact fp16 -> fp32 vector load (the Vector API
 * has no half-precision conversion).
 */
public final class Fp16Vectors {
    /** Float lanes of the machine's preferred shape (16 with AVX-512, 8 with AVX2). */
    public static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    /** Int lanes, same count as {@link #F}. */
    public static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED;
    /** Short lanes, same count as {@link #F} (half the bits). */
    public static final VectorSpecies<Short> S =
            ShortVector.SPECIES_PREFERRED.withShape(VectorShape.forBitSize(F.vectorBitSize() / 2));
    public static final int LANES = F.length();

    private static final float HALF_TO_FLOAT_SCALE = 0x1p112f;

    private Fp16Vectors() {
    }

    /**
     * Sum of the lanes of {@code v} by a fixed halving tree (lane i + lane i + n/2, ...). {@code reduceLanes(ADD)}
     * adds in a different order before and after the JIT compiles the caller, so the same input could give
     * different results within one run (and flip a quantized code downstream); every step here is a
     * lane-wise IEEE add, the same in every tier.
     */
    public static float sum(FloatVector v) {
        FloatVector t = v;
        for (int half = LANES / 2; half >= 1; half /= 2) {
            t = t.add(t.slice(half));
        }
        return t.lane(0);
    }

    /**
     * Loads {@link #LANES} little-endian fp16 values at {@code byteOffset} as fp32, exactly, for every finite
     * input (normal or subnormal), in four vector operations: sign-extend to 32 bits, shift the fp16 fields
     * into fp32 position ({@code << 13}: sign lands in bit 31, exponent in bits 23-27), clear the copies of
     * the sign that the extension left in bits 28-30, and multiply by 2^112 to re-bias the exponent (which
     * also scales subnormals right). Infinities and NaNs do not survive (the cache never stores them).
     */
    public static FloatVector load(MemorySegment segment, long byteOffset) {
        ShortVector half = ShortVector.fromMemorySegment(S, segment, byteOffset, ByteOrder.LITTLE_ENDIAN);
        IntVector bits = (IntVector) half.convertShape(VectorOperators.S2I, I, 0);
        return bits.lanewise(VectorOperators.LSHL, 13).and(0x8FFF_FFFF).reinterpretAsFloats().mul(HALF_TO_FLOAT_SCALE);
    }
}
