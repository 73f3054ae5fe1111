package io.kvmix.core.plan;

/**
 * Decides how many of the oldest tokens of a full-precision (FP) buffer leave it for packed blocks
 * after an append. Tokens always leave in whole groups of G.
 */
public sealed interface ResidualPolicy permits ResidualPolicy.Ratio, ResidualPolicy.Window {

    /**
     * Tokens to quantize now, a multiple of {@code groupSize}, given the FP buffer's length after
     * the append ({@code fpLength}: the buffer, not the context).
     */
    int tokensToQuantize(int fpLength, int groupSize);

    /**
     * The reference's rule: keep {@code floor(ratio * fpLength)} newest tokens in FP and quantize
     * the oldest {@code floor((fpLength - keep) / G) * G}.
     */
    record Ratio(double ratio) implements ResidualPolicy {
        public Ratio {
            if (!(ratio >= 0 && ratio <= 1)) {
                throw new IllegalArgumentException("residual ratio=" + ratio + ", must be in [0, 1]");
            }
        }

        @Override
        public int tokensToQuantize(int fpLength, int groupSize) {
            int keep = (int) Math.floor(ratio * fpLength);
            return (fpLength - keep) / groupSize * groupSize;
        }

        /** The reference's ratio for a width: 4 -> 0.3, 3 -> 0.2, 2 -> 0.2, 1 -> 0.1. */
        public static Ratio referenceFor(int bits) {
            return new Ratio(switch (bits) {
                case 4 -> 0.3;
                case 3, 2 -> 0.2;
                case 1 -> 0.1;
                default -> throw new IllegalArgumentException("bits=" + bits + ", must be 1-4");
            });
        }
    }

    /** KIVI-style: keep the newest {@code tokens} .. {@code tokens + G - 1} tokens in FP. */
    record Window(int tokens) implements ResidualPolicy {
        public Window {
            if (tokens < 0) {
                throw new IllegalArgumentException("residual window=" + tokens + ", must be >= 0");
            }
        }

        @Override
        public int tokensToQuantize(int fpLength, int groupSize) {
            return Math.max(0, fpLength - tokens) / groupSize * groupSize;
        }
    }
}
