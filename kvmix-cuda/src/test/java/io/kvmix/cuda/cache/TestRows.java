package io.kvmix.cuda.cache;

import io.kvmix.core.quant.Fp16;
import io.kvmix.cuda.CudaDevice;
import io.kvmix.cuda.DeviceBuffer;

import java.util.Random;

/** Random key/value/query rows for cache tests: Gaussian, with the corner cases of the quantizer mixed in. */
final class TestRows {
    private TestRows() {
    }

    /** {@code count} floats: N(0, 1) times a per-call scale, with some zeros of both signs, constant runs and fp16 ties. */
    static float[] random(Random random, int count) {
        float scale = (float) Math.pow(2, random.nextInt(8) - 3);
        float[] out = new float[count];
        for (int i = 0; i < count; i++) {
            int kind = random.nextInt(64);
            out[i] = switch (kind) {
                case 0 -> 0.0f;
                case 1 -> -0.0f;
                case 2 -> 1.0f + 1.0f / 2048;     // halfway between two fp16 values: rounds to even
                default -> (float) random.nextGaussian() * scale;
            };
        }
        if (count >= 64 && random.nextBoolean()) {
            java.util.Arrays.fill(out, 0, 64, out[0]);  // a constant stretch: groups with scale 0
        }
        return out;
    }

    /**
     * {@code count} multiples of 1/4 in [0, 3]: groups then often span exactly 0..3, so that 2-bit and 1-bit
     * codes fall exactly halfway between two levels (the quantizer's rounding ties).
     */
    static float[] grid(Random random, int count) {
        float[] out = new float[count];
        for (int i = 0; i < count; i++) {
            out[i] = random.nextInt(13) * 0.25f;
        }
        return out;
    }

    /** {@code rows} rounded to fp16 in a new device buffer (the caller closes it). */
    static DeviceBuffer halfRows(CudaDevice device, float[] rows) {
        short[] half = new short[rows.length];
        for (int i = 0; i < rows.length; i++) {
            half[i] = Fp16.encode(rows[i]);
        }
        DeviceBuffer buffer = device.allocate(2L * half.length, "test rows");
        buffer.upload(half, half.length);
        return buffer;
    }

    /** Norm-wise relative error ||actual - expected|| / ||expected|| of {@code length} floats from {@code offset}. */
    static double relativeError(float[] expected, float[] actual, int offset, int length) {
        double diff = 0;
        double norm = 0;
        for (int i = offset; i < offset + length; i++) {
            diff += (double) (actual[i] - expected[i]) * (actual[i] - expected[i]);
            norm += (double) expected[i] * expected[i];
        }
        return Math.sqrt(diff / Math.max(norm, 1e-30));
    }
}
