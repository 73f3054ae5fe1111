package io.kvmix.profiler.allocation;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Objects;
import java.util.stream.IntStream;

/**
 * Per-layer importance of one model, layer 0 first: the profiler's mean gradient norms
 * {@code ||dL/dW_k||_2} ({@code keys}) and {@code ||dL/dW_v||_2} ({@code values}). A larger score
 * means a more important layer. Keys and values are ranked separately: a layer can matter for its
 * keys and not for its values.
 *
 * <p>Both arrays are copied in and out, so an instance never changes. Equality compares the scores
 * element by element.
 *
 * @param keys   one key score per layer; finite and {@code >= 0}
 * @param values one value score per layer, as many as {@code keys}; finite and {@code >= 0}
 */
public record LayerImportance(double[] keys, double[] values) {
    public LayerImportance {
        Objects.requireNonNull(keys, "keys");
        Objects.requireNonNull(values, "values");
        keys = keys.clone();
        values = values.clone();
        List<String> problems = new ArrayList<>();
        if (keys.length == 0) {
            problems.add("keys is empty, importance needs one score per layer and at least one layer");
        }
        if (keys.length != values.length) {
            problems.add("keys has " + keys.length + " scores, values has " + values.length
                    + ": both need one score per layer");
        }
        problems.addAll(scoreProblems("keys", keys));
        problems.addAll(scoreProblems("values", values));
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException(String.join("; ", problems));
        }
    }

    private static List<String> scoreProblems(String field, double[] scores) {
        return IntStream.range(0, scores.length)
                .filter(layer -> !(Double.isFinite(scores[layer]) && scores[layer] >= 0))
                .mapToObj(layer -> field + "[" + layer + "]=" + scores[layer] + ", must be a finite number >= 0")
                .toList();
    }

    public int layerCount() {
        return keys.length;
    }

    /** A copy of the key scores. */
    @Override
    public double[] keys() {
        return keys.clone();
    }

    /** A copy of the value scores. */
    @Override
    public double[] values() {
        return values.clone();
    }

    /** Layer indices by key importance, most important first; equal scores keep the lower index first. */
    public int[] keyRanking() {
        return ranking(keys);
    }

    /** Layer indices by value importance, most important first; equal scores keep the lower index first. */
    public int[] valueRanking() {
        return ranking(values);
    }

    private static int[] ranking(double[] scores) {
        // A stable sort on descending score: ties stay in layer order.
        return IntStream.range(0, scores.length).boxed()
                .sorted(Comparator.comparingDouble((Integer layer) -> scores[layer]).reversed())
                .mapToInt(Integer::intValue)
                .toArray();
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof LayerImportance that
                && Arrays.equals(keys, that.keys)
                && Arrays.equals(values, that.values);
    }

    @Override
    public int hashCode() {
        return 31 * Arrays.hashCode(keys) + Arrays.hashCode(values);
    }

    @Override
    public String toString() {
        return "LayerImportance[keys=" + Arrays.toString(keys) + ", values=" + Arrays.toString(values) + "]";
    }
}
