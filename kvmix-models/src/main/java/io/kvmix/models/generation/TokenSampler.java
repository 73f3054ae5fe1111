package io.kvmix.models.generation;

import java.util.Arrays;
import java.util.SplittableRandom;

/** Picks the next token from a row of logits: argmax, or temperature + nucleus (top-p) sampling. */
final class TokenSampler {
    private final SamplingOptions options;
    private final SplittableRandom random;

    TokenSampler(SamplingOptions options) {
        this.options = options;
        this.random = new SplittableRandom(options.seed());
    }

    /** The next token; {@code logits[offset .. offset + vocab)} may have been masked to -inf. */
    int next(float[] logits, int offset, int vocab) {
        if (options.greedy()) {
            return argmax(logits, offset, vocab);
        }
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < vocab; i++) {
            max = Math.max(max, logits[offset + i]);
        }
        double[] probs = new double[vocab];
        double sum = 0;
        for (int i = 0; i < vocab; i++) {
            probs[i] = Math.exp((logits[offset + i] - max) / options.temperature());
            sum += probs[i];
        }
        Integer[] order = new Integer[vocab];
        for (int i = 0; i < vocab; i++) {
            order[i] = i;
        }
        Arrays.sort(order, (a, b) -> Double.compare(probs[b], probs[a]));
        // Smallest prefix of the sorted tokens whose mass reaches top-p (at least one token).
        double kept = 0;
        int count = 0;
        while (count < vocab && (count == 0 || kept < options.topP() * sum)) {
            kept += probs[order[count++]];
        }
        double target = random.nextDouble() * kept;
        double running = 0;
        for (int i = 0; i < count; i++) {
            running += probs[order[i]];
            if (running >= target) {
                return order[i];
            }
        }
        return order[count - 1];
    }

    static int argmax(float[] logits, int offset, int vocab) {
        int best = 0;
        for (int i = 1; i < vocab; i++) {
            if (logits[offset + i] > logits[offset + best]) {
                best = i;
            }
        }
        return best;
    }
}
