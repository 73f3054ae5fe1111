package io.kvmix.profiler;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/** Turns a long token stream (tokenized calibration text) into profiler prompts. */
public final class CalibrationPrompts {
    private CalibrationPrompts() {
    }

    /**
     * Consecutive prompts of exactly {@code length} tokens cut from {@code ids}; a shorter tail is
     * dropped, unless the stream is shorter than one prompt, in which case it is the only prompt.
     *
     * @param source named in the error when {@code ids} has fewer than 2 tokens
     */
    public static List<int[]> split(int[] ids, int length, String source) {
        if (length < 2) {
            throw new IllegalArgumentException("prompt length " + length + ", must be >= 2");
        }
        if (ids.length < 2) {
            throw new IllegalArgumentException(source + ": " + ids.length + " token(s), a prompt needs at least 2");
        }
        if (ids.length <= length) {
            return List.of(ids.clone());
        }
        List<int[]> prompts = new ArrayList<>();
        for (int start = 0; start + length <= ids.length; start += length) {
            prompts.add(Arrays.copyOfRange(ids, start, start + length));
        }
        return prompts;
    }

    /** The first {@code count} prompts, or all of them when {@code count} is null. */
    public static List<int[]> first(List<int[]> prompts, Integer count) {
        if (count == null) {
            return prompts;
        }
        if (count < 1) {
            throw new IllegalArgumentException("prompt count " + count + ", must be >= 1");
        }
        return prompts.subList(0, Math.min(count, prompts.size()));
    }
}
