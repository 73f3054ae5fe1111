package io.kvmix.models.ops;

import io.kvmix.models.config.DType;
import io.kvmix.core.quant.Fp16Vectors;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;

import static io.kvmix.core.quant.Fp16Vectors.F;
import static io.kvmix.core.quant.Fp16Vectors.LANES;

/** {@code out = x / sqrt(mean(x^2) + eps) * weight}, per token, as Llama's RMSNorm (fp32). */
public final class RmsNorm {
    private RmsNorm() {
    }

    /**
     * @param x      {@code [tokens][dim]}
     * @param weight {@code [dim]} in its stored type
     * @param out    {@code [tokens][dim]} (may be {@code x})
     */
    public static void apply(float[] x, int tokens, int dim, MemorySegment weight, DType dtype, double eps,
                             float[] out) {
        for (int t = 0; t < tokens; t++) {
            int base = t * dim;
            FloatVector squares = FloatVector.zero(F);
            int i = 0;
            for (; i <= dim - LANES; i += LANES) {
                FloatVector v = FloatVector.fromArray(F, x, base + i);
                squares = v.fma(v, squares);
            }
            float sum = Fp16Vectors.sum(squares);
            for (; i < dim; i++) {
                sum += x[base + i] * x[base + i];
            }
            float inv = (float) (1.0 / Math.sqrt(sum / dim + eps));
            i = 0;
            for (; i <= dim - LANES; i += LANES) {
                FloatVector.fromArray(F, x, base + i).mul(inv)
                        .mul(MatMul.load(weight, dtype, (long) i * dtype.bytes())).intoArray(out, base + i);
            }
            for (; i < dim; i++) {
                out[base + i] = x[base + i] * inv * MatMul.scalar(weight, dtype, (long) i * dtype.bytes());
            }
        }
    }
}
