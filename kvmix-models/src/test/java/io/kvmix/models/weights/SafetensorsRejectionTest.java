package io.kvmix.models.weights;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvmix.models.config.DType;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** Files that must be refused, each with the exact message naming the file and the tensor. */
class SafetensorsRejectionTest {
    @TempDir
    Path dir;

    private static CheckpointException reject(Path file) {
        return assertThrows(CheckpointException.class, () -> SafetensorsFile.open(file).close());
    }

    /** Opens {@code file}, expecting {@code FILE: DETAIL}, where DETAIL starts with the tensor if one is given. */
    private static void assertRejected(Path file, String tensor, String detail) {
        CheckpointException e = reject(file);
        String prefix = tensor == null ? "" : "tensor '" + tensor + "': ";
        assertEquals(file + ": " + prefix + detail, e.getMessage());
        assertEquals(file, e.source());
        assertEquals(tensor, e.tensor());
        assertEquals(detail, e.detail());
    }

    private Path raw(String header, int dataBytes) {
        return SafetensorsWriter.writeRaw(dir.resolve("bad.safetensors"), header, new byte[dataBytes]);
    }

    /** Three F32 tensors of 4 elements: a at [0, 16), b at [16, 32), c at [32, 48) of the data. */
    private Path threeTensors() {
        return new SafetensorsWriter()
                .add("a", DType.FLOAT32, new long[] {4}, new float[] {1, 2, 3, 4})
                .add("b", DType.FLOAT32, new long[] {2, 2}, new float[] {5, 6, 7, 8})
                .add("c", DType.FLOAT32, new long[] {4}, new float[] {9, 10, 11, 12})
                .write(dir.resolve("three.safetensors"));
    }

    private static Path truncate(Path file, long newSize) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(newSize);
        }
        return file;
    }

    @Test
    void missingFile() {
        assertRejected(dir.resolve("nope.safetensors"), null, "file not found");
    }

    @Test
    void fileShorterThanTheHeaderLength() {
        Path file = SafetensorsWriter.writeBytes(dir.resolve("short.safetensors"), new byte[] {1, 2, 3, 4, 5});

        assertRejected(file, null,
                "file is 5 bytes, too short to hold the 8-byte header length that starts a safetensors file");
    }

    @Test
    void headerLengthLargerThanTheFile() {
        byte[] bytes = ByteBuffer.allocate(10).order(ByteOrder.LITTLE_ENDIAN).putLong(1000).put((byte) '{')
                .put((byte) '}').array();
        Path file = SafetensorsWriter.writeBytes(dir.resolve("long.safetensors"), bytes);

        assertRejected(file, null,
                "header length 1000 is larger than the 2 bytes that follow it (truncated, or not a safetensors file)");
    }

    @Test
    void headerLengthThatIsNegativeAsASignedLong() {
        byte[] bytes = ByteBuffer.allocate(10).order(ByteOrder.LITTLE_ENDIAN).putLong(-1).array();
        Path file = SafetensorsWriter.writeBytes(dir.resolve("huge.safetensors"), bytes);

        assertRejected(file, null, "header length 18446744073709551615 is larger than the 2 bytes that follow it"
                + " (truncated, or not a safetensors file)");
    }

    @Test
    void absurdHeaderLengthInsideALargeFile() throws IOException {
        Path file = dir.resolve("sparse.safetensors");
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(150_000_000L); // sparse: costs no disk
            f.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(120_000_000L).array());
        }

        assertRejected(file, null, "header length 120000000 exceeds the limit of 100000000 bytes"
                + " (not a safetensors file?)");
    }

    @Test
    void malformedHeaderJson() {
        assertRejected(raw("{\"w\": {\"dtype\": \"F16\",", 0), null,
                "malformed header JSON at line 1, column 23: Unexpected end-of-input within/between Object entries");
    }

    @Test
    void headerThatIsNotAnObject() {
        assertRejected(raw("[1, 2]", 0), null, "header must be a JSON object, got the array [1,2]");
    }

    @Test
    void headerThatIsNotUtf8() {
        byte[] bytes = ByteBuffer.allocate(10).order(ByteOrder.LITTLE_ENDIAN).putLong(2).put((byte) 0xFF)
                .put((byte) 0xFE).array();

        assertRejected(SafetensorsWriter.writeBytes(dir.resolve("latin.safetensors"), bytes), null,
                "header is not valid UTF-8");
    }

    @Test
    void tensorNamedTwice() {
        Path file = raw("{\"w\": {\"dtype\": \"F16\", \"shape\": [1], \"data_offsets\": [0, 2]},"
                + " \"w\": {\"dtype\": \"F16\", \"shape\": [1], \"data_offsets\": [2, 4]}}", 4);

        assertRejected(file, null, "malformed header JSON at line 1, column 66: Duplicate field 'w'");
    }

    /** One tensor entry {@code w} (JSON with ' for "), over 16 bytes of data, and the detail it must give. */
    static Stream<Arguments> badTensorEntries() {
        return Stream.of(
                Arguments.of("entry not an object", "3",
                        "header entry must be an object, got the number 3"),
                Arguments.of("missing dtype", "{'shape': [1], 'data_offsets': [0, 2]}",
                        "header entry has no field 'dtype'"),
                Arguments.of("missing shape", "{'dtype': 'F16', 'data_offsets': [0, 2]}",
                        "header entry has no field 'shape'"),
                Arguments.of("missing offsets", "{'dtype': 'F16', 'shape': [1]}",
                        "header entry has no field 'data_offsets'"),
                Arguments.of("dtype not a string", "{'dtype': 16, 'shape': [1], 'data_offsets': [0, 2]}",
                        "field 'dtype' must be a string, got the number 16"),
                Arguments.of("unsupported dtype", "{'dtype': 'I64', 'shape': [1], 'data_offsets': [0, 8]}",
                        "dtype 'I64' is not supported (supported: F16, BF16, F32)"),
                Arguments.of("shape a string", "{'dtype': 'F16', 'shape': '1x1', 'data_offsets': [0, 2]}",
                        "field 'shape' must be an array of integers, got the string \"1x1\""),
                Arguments.of("fractional dim", "{'dtype': 'F16', 'shape': [1.5], 'data_offsets': [0, 2]}",
                        "field 'shape' must be an array of integers, got the array [1.5]"),
                Arguments.of("negative dim", "{'dtype': 'F16', 'shape': [2, -1], 'data_offsets': [0, 2]}",
                        "shape [2, -1] has a negative dimension"),
                Arguments.of("one offset", "{'dtype': 'F16', 'shape': [1], 'data_offsets': [2]}",
                        "field 'data_offsets' must be [begin, end], two non-negative integers, got the array [2]"),
                Arguments.of("negative offset", "{'dtype': 'F16', 'shape': [1], 'data_offsets': [-2, 0]}",
                        "field 'data_offsets' must be [begin, end], two non-negative integers, got the array [-2,0]"),
                Arguments.of("end before begin", "{'dtype': 'F16', 'shape': [0], 'data_offsets': [4, 2]}",
                        "data_offsets [4, 2] end before they begin"),
                Arguments.of("bytes differ from shape", "{'dtype': 'F16', 'shape': [2, 3], 'data_offsets': [0, 10]}",
                        "data_offsets [0, 10] hold 10 bytes, but shape [2, 3] of F16 needs 12"),
                Arguments.of("bytes of another dtype", "{'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 4]}",
                        "data_offsets [0, 4] hold 4 bytes, but shape [2] of F32 needs 8"),
                Arguments.of("overflowing shape",
                        "{'dtype': 'F32', 'shape': [4294967296, 4294967296], 'data_offsets': [0, 4]}",
                        "shape [4294967296, 4294967296] has more bytes than a file can hold"),
                Arguments.of("offsets past the end", "{'dtype': 'F32', 'shape': [8], 'data_offsets': [0, 32]}",
                        "data_offsets [0, 32] run past the end of the file, whose data section holds 16 bytes"
                                + " (truncated file, or a header that does not match its data)"));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("badTensorEntries")
    void badTensorEntry(String what, String entry, String detail) {
        Path file = raw("{\"w\": " + entry.replace('\'', '"') + "}", 16);

        assertRejected(file, "w", detail);
    }

    @Test
    void overlappingTensors() {
        Path file = raw("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                + " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12);

        assertRejected(file, "b", "data_offsets [4, 12] overlap those of tensor 'a' [0, 8]");
    }

    @Test
    void emptyTensorsOverlapNothing() {
        Path file = raw("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                + " \"none\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]}}", 8);

        try (SafetensorsFile st = SafetensorsFile.open(file)) {
            assertEquals(0, st.tensor("none").elementCount());
        }
    }

    @Test
    void metadataThatIsNotAnObject() {
        assertRejected(raw("{\"__metadata__\": \"pt\"}", 0), null,
                "__metadata__ must be an object of strings, got the string \"pt\"");
    }

    @Test
    void metadataThatIsNotAString() {
        assertRejected(raw("{\"__metadata__\": {\"format\": 1}}", 0), null,
                "__metadata__['format'] must be a string, got the number 1");
    }

    @Test
    void truncatedFileNamesTheFirstTensorCutOff() throws IOException {
        Path file = threeTensors();
        truncate(file, Files.size(file) - 20);

        assertRejected(file, "b", "data_offsets [16, 32] run past the end of the file, whose data section holds"
                + " 28 bytes (truncated file, or a header that does not match its data)");
    }

    @Test
    void firstTensorCutOffIsFirstInTheDataNotInTheHeader() throws IOException {
        byte[] data = new byte[24];
        Path file = raw("{\"late\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [16, 24]},"
                + " \"early\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", data.length);
        truncate(file, Files.size(file) - 10);

        assertRejected(file, "early", "data_offsets [0, 16] run past the end of the file, whose data section holds"
                + " 14 bytes (truncated file, or a header that does not match its data)");
    }

    /** Cut the file at every byte: each prefix must be refused by name, none read past its end. */
    @Test
    void everyPrefixOfAValidFileIsRefusedCleanly() throws IOException {
        byte[] whole = Files.readAllBytes(threeTensors());

        for (int length = 0; length < whole.length; length++) {
            Path prefix = SafetensorsWriter.writeBytes(dir.resolve("prefix.safetensors"),
                    Arrays.copyOf(whole, length));
            CheckpointException e = reject(prefix);
            assertTrue(e.getMessage().startsWith(prefix + ": "), e.getMessage());
        }
    }
}
