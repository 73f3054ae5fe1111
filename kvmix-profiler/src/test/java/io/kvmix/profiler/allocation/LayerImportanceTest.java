package io.kvmix.profiler.allocation;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LayerImportanceTest {

    @Test
    void copiesScoresInAndOut() {
        double[] keys = {0.5, 0.25};
        double[] values = {1.0, 2.0};
        LayerImportance importance = new LayerImportance(keys, values);
        keys[0] = 9;
        importance.values()[1] = 9;
        assertArrayEquals(new double[] {0.5, 0.25}, importance.keys());
        assertArrayEquals(new double[] {1.0, 2.0}, importance.values());
        assertEquals(2, importance.layerCount());
        assertEquals(new LayerImportance(new double[] {0.5, 0.25}, new double[] {1.0, 2.0}), importance);
        assertEquals(new LayerImportance(new double[] {0.5, 0.25}, new double[] {1.0, 2.0}).hashCode(),
                importance.hashCode());
    }

    @Test
    void ranksKeysAndValuesSeparatelyMostImportantFirstTiesInLayerOrder() {
        LayerImportance importance = new LayerImportance(
                new double[] {0.1, 0.3, 0.3, 0.0, 0.3},
                new double[] {0.9, 0.0, 0.5, 0.5, 0.1});
        assertArrayEquals(new int[] {1, 2, 4, 0, 3}, importance.keyRanking());
        assertArrayEquals(new int[] {0, 2, 3, 4, 1}, importance.valueRanking());
    }

    @Test
    void rejectsEmptyMismatchedNegativeAndNonFiniteScoresNamingEachOne() {
        assertTrue(assertThrows(IllegalArgumentException.class,
                () -> new LayerImportance(new double[0], new double[0])).getMessage().contains("keys is empty"));
        assertTrue(assertThrows(IllegalArgumentException.class,
                () -> new LayerImportance(new double[] {1, 2}, new double[] {1})).getMessage()
                .contains("keys has 2 scores, values has 1"));
        String message = assertThrows(IllegalArgumentException.class, () -> new LayerImportance(
                new double[] {1, -0.5, Double.NaN}, new double[] {Double.POSITIVE_INFINITY, 0, 0})).getMessage();
        assertTrue(message.contains("keys[1]=-0.5, must be a finite number >= 0"), message);
        assertTrue(message.contains("keys[2]=NaN"), message);
        assertTrue(message.contains("values[0]=Infinity"), message);
    }
}
