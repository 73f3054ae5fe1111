package io.kvmix.models.ops;

import io.kvmix.core.parallel.Parallel;
import io.kvmix.core.quant.Fp16Vectors;
import io.kvmix.models.config.DType;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;

import static io.kvmix.core.quant.Fp16Vectors.F;
import static io.kvmix.core.quant.Fp16Vectors.I;
import static io.kvmix.core.quant.Fp16Vectors.LANES;
import static io.kvmix.core.quant.Fp16Vectors.S;

/**
 * {@code out = x W^T} with the weight matrix memory-mapped in its stored type (fp32, fp16 or bf16) and
 * fp32 accumulation: the dense work of a forward pass. Parallel over output rows ({@link Parallel}); each row is read once
 * per call whatever the number of tokens (four tokens share each weight vector load), so decoding
 * streams the weights at memory speed and prefill reuses them from cache.
 */
public final class MatMul {
    private MatMul() {
    }

    /**
     * @param w      weights {@code [outDim][inDim]} row-major, little-endian, in {@code dtype}
     * @param x      activations {@code [tokens][inDim]}
     * @param out    result {@code [tokens][outDim]}
     */
    public static void multiply(MemorySegment w, DType dtype, int outDim, int inDim, float[] x, int tokens,
                                float[] out) {
        long need = (long) outDim * inDim * dtype.bytes();
        if (w.byteSize() < need || x.length < (long) tokens * inDim || out.length < (long) tokens * outDim) {
            throw new IllegalArgumentException("matmul shapes: weights " + w.byteSize() + " bytes for [" + outDim + "]["
                    + inDim + "] " + dtype + ", x " + x.length + ", out " + out.length + ", tokens " + tokens);
        }
        Parallel.forRange(outDim, (from, to) -> {
            int row = from;
            if (tokens < 4) {
                // Decode: four rows at a time keep four weight streams in flight and share each x load.
                for (; row + 4 <= to; row += 4) {
                    for (int t = 0; t < tokens; t++) {
                        multiplyFourRows(w, dtype, row, outDim, inDim, x, t, out);
                    }
                }
            }
            for (; row < to; row++) {
                multiplyRow(w, dtype, row, outDim, inDim, x, tokens, out);
            }
        });
    }

    private static void multiplyRow(MemorySegment w, DType dtype, int row, int outDim, int inDim, float[] x,
                                    int tokens, float[] out) {
        long rowOffset = (long) row * inDim * dtype.bytes();
        int vectorEnd = inDim - inDim % LANES;
        int t = 0;
        for (; t + 4 <= tokens; t += 4) {
            int x0 = t * inDim;
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = FloatVector.zero(F);
            FloatVector a2 = FloatVector.zero(F);
            FloatVector a3 = FloatVector.zero(F);
            for (int i = 0; i < vectorEnd; i += LANES) {
                FloatVector wv = loadUnscaled(w, dtype, rowOffset + (long) i * dtype.bytes());
                a0 = wv.fma(FloatVector.fromArray(F, x, x0 + i), a0);
                a1 = wv.fma(FloatVector.fromArray(F, x, x0 + inDim + i), a1);
                a2 = wv.fma(FloatVector.fromArray(F, x, x0 + 2 * inDim + i), a2);
                a3 = wv.fma(FloatVector.fromArray(F, x, x0 + 3 * inDim + i), a3);
            }
            float scale = unscaledFactor(dtype);
            float s0 = Fp16Vectors.sum(a0) * scale;
            float s1 = Fp16Vectors.sum(a1) * scale;
            float s2 = Fp16Vectors.sum(a2) * scale;
            float s3 = Fp16Vectors.sum(a3) * scale;
            for (int i = vectorEnd; i < inDim; i++) {
                float wi = scalar(w, dtype, rowOffset + (long) i * dtype.bytes());
                s0 += wi * x[x0 + i];
                s1 += wi * x[x0 + inDim + i];
                s2 += wi * x[x0 + 2 * inDim + i];
                s3 += wi * x[x0 + 3 * inDim + i];
            }
            out[t * outDim + row] = s0;
            out[(t + 1) * outDim + row] = s1;
            out[(t + 2) * outDim + row] = s2;
            out[(t + 3) * outDim + row] = s3;
        }
        for (; t < tokens; t++) {
            // One token: two independent chains over the row hide the multiply-add latency.
            int x0 = t * inDim;
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = FloatVector.zero(F);
            int i = 0;
            for (; i + 2 * LANES <= vectorEnd; i += 2 * LANES) {
                a0 = loadUnscaled(w, dtype, rowOffset + (long) i * dtype.bytes()).fma(FloatVector.fromArray(F, x, x0 + i), a0);
                a1 = loadUnscaled(w, dtype, rowOffset + (long) (i + LANES) * dtype.bytes())
                        .fma(FloatVector.fromArray(F, x, x0 + i + LANES), a1);
            }
            for (; i < vectorEnd; i += LANES) {
                a0 = loadUnscaled(w, dtype, rowOffset + (long) i * dtype.bytes()).fma(FloatVector.fromArray(F, x, x0 + i), a0);
            }
            float s = Fp16Vectors.sum(a0.add(a1)) * unscaledFactor(dtype);
            for (; i < inDim; i++) {
                s += scalar(w, dtype, rowOffset + (long) i * dtype.bytes()) * x[x0 + i];
            }
            out[t * outDim + row] = s;
        }
    }

    /** {@code out[t][row .. row+3]} for one token {@code t}. */
    private static void multiplyFourRows(MemorySegment w, DType dtype, int row, int outDim, int inDim, float[] x,
                                         int t, float[] out) {
        long rowBytes = (long) inDim * dtype.bytes();
        long r0 = row * rowBytes;
        int x0 = t * inDim;
        int vectorEnd = inDim - inDim % LANES;
        FloatVector a0 = FloatVector.zero(F);
        FloatVector a1 = FloatVector.zero(F);
        FloatVector a2 = FloatVector.zero(F);
        FloatVector a3 = FloatVector.zero(F);
        for (int i = 0; i < vectorEnd; i += LANES) {
            FloatVector xv = FloatVector.fromArray(F, x, x0 + i);
            long at = r0 + (long) i * dtype.bytes();
            a0 = loadUnscaled(w, dtype, at).fma(xv, a0);
            a1 = loadUnscaled(w, dtype, at + rowBytes).fma(xv, a1);
            a2 = loadUnscaled(w, dtype, at + 2 * rowBytes).fma(xv, a2);
            a3 = loadUnscaled(w, dtype, at + 3 * rowBytes).fma(xv, a3);
        }
        float scale = unscaledFactor(dtype);
        float s0 = Fp16Vectors.sum(a0) * scale;
        float s1 = Fp16Vectors.sum(a1) * scale;
        float s2 = Fp16Vectors.sum(a2) * scale;
        float s3 = Fp16Vectors.sum(a3) * scale;
        for (int i = vectorEnd; i < inDim; i++) {
            long at = r0 + (long) i * dtype.bytes();
            s0 += scalar(w, dtype, at) * x[x0 + i];
            s1 += scalar(w, dtype, at + rowBytes) * x[x0 + i];
            s2 += scalar(w, dtype, at + 2 * rowBytes) * x[x0 + i];
            s3 += scalar(w, dtype, at + 3 * rowBytes) * x[x0 + i];
        }
        int o = t * outDim + row;
        out[o] = s0;
        out[o + 1] = s1;
        out[o + 2] = s2;
        out[o + 3] = s3;
    }

    /**
     * Weights as {@link #load} gives them divided by {@link #unscaledFactor}: for fp16 the exponent re-bias
     * (a multiply by 2^112 per vector) moves out of the inner loop to one multiply per output. Every fp16
     * value stays exact (subnormal fp16 become exact fp32 subnormals); only products that fall below the
     * fp32 normal range lose relative precision, an absolute error under 2^-37 after scaling.
     */
    static FloatVector loadUnscaled(MemorySegment w, DType dtype, long byteOffset) {
        if (dtype == DType.FLOAT16) {
            IntVector bits = (IntVector) ShortVector.fromMemorySegment(S, w, byteOffset, ByteOrder.LITTLE_ENDIAN)
                    .convertShape(VectorOperators.S2I, I, 0);
            return bits.lanewise(VectorOperators.LSHL, 13).and(0x8FFF_FFFF).reinterpretAsFloats();
        }
        return load(w, dtype, byteOffset);
    }

    /** What a sum of {@link #loadUnscaled} products is multiplied by. */
    static float unscaledFactor(DType dtype) {
        return dtype == DType.FLOAT16 ? 0x1p112f : 1f;
    }

    /** {@link Fp16Vectors#LANES} weights at {@code byteOffset} as fp32. */
    static FloatVector load(MemorySegment w, DType dtype, long byteOffset) {
        return switch (dtype) {
            case FLOAT32 -> FloatVector.fromMemorySegment(F, w, byteOffset, ByteOrder.LITTLE_ENDIAN);
            case FLOAT16 -> Fp16Vectors.load(w, byteOffset);
            case BFLOAT16 -> ((IntVector) ShortVector.fromMemorySegment(S, w, byteOffset, ByteOrder.LITTLE_ENDIAN)
                    .convertShape(VectorOperators.S2I, I, 0)).lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
        };
    }

    /** One weight at {@code byteOffset} as fp32. */
    static float scalar(MemorySegment w, DType dtype, long byteOffset) {
        return switch (dtype) {
            case FLOAT32 -> w.get(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), byteOffset);
            case FLOAT16 -> io.kvmix.core.quant.Fp16.get(w, byteOffset);
            case BFLOAT16 -> Float.intBitsToFloat(w.get(io.kvmix.core.quant.Fp16.LAYOUT, byteOffset) << 16);
        };
    }
}
