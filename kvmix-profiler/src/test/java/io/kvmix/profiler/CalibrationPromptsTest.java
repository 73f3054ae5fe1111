package io.kvmix.profiler;

import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class CalibrationPromptsTest {
    @Test
    void cutsWholePromptsAndDropsTheShortTail() {
        int[] ids = java.util.stream.IntStream.range(0, 10).toArray();
        List<int[]> prompts = CalibrationPrompts.split(ids, 4, "t");
        assertEquals(2, prompts.size());
        assertArrayEquals(new int[] {0, 1, 2, 3}, prompts.get(0));
        assertArrayEquals(new int[] {4, 5, 6, 7}, prompts.get(1));
    }

    @Test
    void aShortStreamIsOnePrompt() {
        assertArrayEquals(new int[] {5, 6, 7}, CalibrationPrompts.split(new int[] {5, 6, 7}, 4, "t").getFirst());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> CalibrationPrompts.split(new int[] {5}, 4, "calib.txt"));
        assertEquals("calib.txt: 1 token(s), a prompt needs at least 2", e.getMessage());
    }

    @Test
    void firstSelectsAPrefix() {
        List<int[]> prompts = List.of(new int[] {1, 2}, new int[] {3, 4}, new int[] {5, 6});
        assertEquals(2, CalibrationPrompts.first(prompts, 2).size());
        assertEquals(3, CalibrationPrompts.first(prompts, 9).size());
        assertEquals(3, CalibrationPrompts.first(prompts, null).size());
        assertThrows(IllegalArgumentException.class, () -> CalibrationPrompts.first(prompts, 0));
    }
}
