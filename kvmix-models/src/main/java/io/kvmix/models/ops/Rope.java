package io.kvmix.models.ops;

/**
 * Rotary position embedding as Hugging Face Llama applies it ("rotate half"): channel {@code i} of the
 * first half of a head pairs with channel {@code i + headDim/2}, at angle {@code position * invFreq[i]},
 * {@code invFreq[i] = 1 / theta^(2i / headDim)}, all in fp32 like transformers.
 */
public final class Rope {
    private final int headDim;
    private final float[] invFreq; // [headDim / 2]

    public Rope(int headDim, double theta) {
        this.headDim = headDim;
        this.invFreq = new float[headDim / 2];
        for (int i = 0; i < headDim / 2; i++) {
            float exponent = (float) (2 * i) / headDim;
            invFreq[i] = 1f / (float) Math.pow(theta, exponent);
        }
    }

    /** Angle per position of channel pair {@code i} (of {@code headDim / 2}): {@code 1 / theta^(2i / headDim)}. */
    public float inverseFrequency(int pair) {
        return invFreq[pair];
    }

    /**
     * Rotates every head of {@code tokens} rows in place.
     *
     * @param x          {@code [tokens][heads * headDim]}
     * @param positions  sequence position of each row
     */
    public void apply(float[] x, int tokens, int heads, int[] positions) {
        int half = headDim / 2;
        float[] cos = new float[half];
        float[] sin = new float[half];
        for (int t = 0; t < tokens; t++) {
            for (int i = 0; i < half; i++) {
                float angle = positions[t] * invFreq[i];
                cos[i] = (float) Math.cos(angle);
                sin[i] = (float) Math.sin(angle);
            }
            for (int h = 0; h < heads; h++) {
                int base = (t * heads + h) * headDim;
                for (int i = 0; i < half; i++) {
                    float a = x[base + i];
                    float b = x[base + half + i];
                    x[base + i] = a * cos[i] - b * sin[i];
                    x[base + half + i] = b * cos[i] + a * sin[i];
                }
            }
        }
    }
}
