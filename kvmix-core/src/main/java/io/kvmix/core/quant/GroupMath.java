package io.kvmix.core.quant;

/**
 * The scalar arithmetic of FORMAT.md section 1, shared by every CPU quantizer so that they agree bit
 * for bit. All operations are single IEEE fp32 operations (no fused multiply-add).
 */
public final class GroupMath {
    private GroupMath() {
    }

    /**
     * fp16 scale of a group, as an fp32 value: {@code fp16((max - min) / maxCode)}.
     *
     * @throws QuantizationException if the scale overflows fp16
     */
    public static float scale16(float min16, float max16, int maxCode, MatrixOrigin origin, int firstLane,
                                int lanes, int pack) {
        float scale = (max16 - min16) / maxCode;
        float scale16 = Fp16.round(scale);
        if (scale16 == Float.POSITIVE_INFINITY) {
            throw new QuantizationException(origin.describeGroup(firstLane, lanes, pack)
                    + ": group range " + min16 + ".." + max16 + " needs a scale of " + scale
                    + ", which overflows fp16 at " + (maxCode + 1) + " levels");
        }
        return scale16;
    }

    /** Code of {@code x16} in a group: {@code clamp(floor((x - min) / scale + 0.5), 0, maxCode)}; 0 when scale is 0. */
    public static int code(float x16, float min16, float scale16, int maxCode) {
        if (scale16 == 0f) {
            return 0;
        }
        float y = (x16 - min16) / scale16 + 0.5f;
        int q = (int) Math.floor(y);
        return Math.max(0, Math.min(maxCode, q));
    }

    public static QuantizationException nonFinite(float x, MatrixOrigin origin, int lane, int pack) {
        return new QuantizationException(origin.describe(lane, pack) + ": non-finite value " + x
                + " cannot be quantized");
    }
}
