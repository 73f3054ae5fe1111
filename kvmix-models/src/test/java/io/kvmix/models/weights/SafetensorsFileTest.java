package io.kvmix.models.weights;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvmix.models.config.DType;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Reading valid files: values in every dtype, rows, metadata, and what happens after close. */
class SafetensorsFileTest {
    /** Exact in every dtype, then values each dtype must round: tiny, huge, a third, negative zero. */
    private static final float[] VALUES = {0f, 1f, -2.5f, 0.75f, 1024f, -0f,
            1f / 3, 3.14159265f, -1e-3f, 60000f, 1e-6f, -123.456f};

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(DType.class)
    void roundTripsEveryElementInItsDtype(DType dtype) {
        Path file = new SafetensorsWriter().add("w", dtype, new long[] {3, 4}, VALUES)
                .write(dir.resolve("a.safetensors"));

        try (SafetensorsFile st = SafetensorsFile.open(file)) {
            Tensor w = st.tensor("w");
            assertEquals(dtype, w.dtype());
            assertArrayEquals(new long[] {3, 4}, w.shape());
            assertEquals(12, w.elementCount());
            assertEquals(12L * dtype.bytes(), w.data().byteSize());
            assertEquals(file, w.sourceFile());
            float[] expected = new float[VALUES.length];
            for (int i = 0; i < VALUES.length; i++) {
                expected[i] = SafetensorsWriter.stored(dtype, VALUES[i]);
                assertEquals(expected[i], w.get(i), "element " + i);
            }
            assertArrayEquals(expected, w.toFloatArray());
            float[] row = new float[2 + 4];
            w.rowTo(2, row, 2);
            assertArrayEquals(new float[] {0, 0, expected[8], expected[9], expected[10], expected[11]}, row);
        }
    }

    @Test
    void roundingMatchesEachFormat() {
        assertEquals(1f / 3, SafetensorsWriter.stored(DType.FLOAT32, 1f / 3));
        assertEquals(0.333251953125f, SafetensorsWriter.stored(DType.FLOAT16, 1f / 3));
        assertEquals(0.333984375f, SafetensorsWriter.stored(DType.BFLOAT16, 1f / 3));
    }

    @Test
    void holdsTensorsOfMixedDtypesInHeaderOrderWithMetadata() {
        Path file = new SafetensorsWriter()
                .metadata("format", "pt")
                .add("b", DType.BFLOAT16, new long[] {2}, new float[] {1, 2})
                .add("a", DType.FLOAT32, new long[] {1, 3}, new float[] {4, 5, 6})
                .add("c", DType.FLOAT16, new long[] {3}, new float[] {7, 8, 9})
                .write(dir.resolve("mixed.safetensors"));

        try (SafetensorsFile st = SafetensorsFile.open(file)) {
            assertEquals(List.of("b", "a", "c"), List.copyOf(st.names()));
            assertEquals(Map.of("format", "pt"), st.metadata());
            assertEquals(DType.BFLOAT16, st.tensor("b").dtype());
            assertEquals(5f, st.tensor("a").get(1));
            assertEquals(9f, st.tensor("c").get(2));
            assertEquals("a F32 [1, 3]", st.tensor("a").toString());
        }
    }

    @Test
    void readsDataThatIsNotAligned() {
        // An odd header length puts the data at an odd byte: no element is naturally aligned.
        String header = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        String oddLength = header.length() % 2 == 1 ? header : header + " ";
        Path file = SafetensorsWriter.writeRaw(dir.resolve("odd.safetensors"), oddLength,
                SafetensorsWriter.encode(DType.FLOAT32, new float[] {1.5f, -7f}));

        try (SafetensorsFile st = SafetensorsFile.open(file)) {
            assertEquals(1, (8 + oddLength.length()) % 2);
            assertArrayEquals(new float[] {1.5f, -7f}, st.tensor("x").toFloatArray());
        }
    }

    @Test
    void acceptsScalarsEmptyTensorsAndEmptyFiles() {
        Path file = new SafetensorsWriter()
                .add("scalar", DType.FLOAT32, new long[] {}, new float[] {2.5f})
                .add("empty", DType.FLOAT16, new long[] {0, 4}, new float[] {})
                .write(dir.resolve("edge.safetensors"));
        Path none = SafetensorsWriter.writeRaw(dir.resolve("none.safetensors"), "{}", new byte[0]);

        try (SafetensorsFile st = SafetensorsFile.open(file); SafetensorsFile empty = SafetensorsFile.open(none)) {
            assertEquals(2.5f, st.tensor("scalar").get(0));
            assertEquals(0, st.tensor("scalar").rank());
            assertEquals(0, st.tensor("empty").elementCount());
            assertEquals(0, empty.names().size());
        }
    }

    @Test
    void tensorsAreReadOnlyCopySafeAndBoundsChecked() {
        Path file = new SafetensorsWriter().add("w", DType.FLOAT16, new long[] {2, 3}, new float[6])
                .add("norm", DType.FLOAT32, new long[] {3}, new float[3])
                .write(dir.resolve("w.safetensors"));

        try (SafetensorsFile st = SafetensorsFile.open(file)) {
            Tensor w = st.tensor("w");
            assertTrue(w.data().isReadOnly());
            w.shape()[0] = 99;
            assertArrayEquals(new long[] {2, 3}, w.shape());
            assertEquals(3, w.dim(1));
            assertThrows(IndexOutOfBoundsException.class, () -> w.get(6));
            assertThrows(IndexOutOfBoundsException.class, () -> w.get(-1));
            assertThrows(IndexOutOfBoundsException.class, () -> w.rowTo(2, new float[3], 0));
            assertThrows(IndexOutOfBoundsException.class, () -> w.rowTo(0, new float[3], 1));
            IllegalStateException notMatrix = assertThrows(IllegalStateException.class,
                    () -> st.tensor("norm").rowTo(0, new float[3], 0));
            assertEquals("tensor 'norm' has shape [3]; rowTo needs a 2-D tensor", notMatrix.getMessage());
        }
    }

    @Test
    void namesFileAndTensorWhenAskedForAMissingOne() {
        Path file = new SafetensorsWriter().add("w", DType.FLOAT32, new long[] {1}, new float[1])
                .write(dir.resolve("w.safetensors"));

        try (SafetensorsFile st = SafetensorsFile.open(file)) {
            CheckpointException e = assertThrows(CheckpointException.class, () -> st.tensor("v"));
            assertEquals(file + ": tensor 'v': no such tensor in this file", e.getMessage());
            assertEquals("v", e.tensor());
            assertEquals(file, e.source());
        }
    }

    @Test
    void tensorsAreUnreadableAfterCloseAndCloseIsIdempotent() {
        Path file = new SafetensorsWriter().add("w", DType.FLOAT32, new long[] {2}, new float[] {1, 2})
                .write(dir.resolve("w.safetensors"));
        SafetensorsFile st = SafetensorsFile.open(file);
        Tensor w = st.tensor("w");

        st.close();
        st.close();

        assertThrows(IllegalStateException.class, () -> w.get(0));
        assertThrows(IllegalStateException.class, w::toFloatArray);
    }
}
