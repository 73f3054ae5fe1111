package io.kvmix.models.weights;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.kvmix.models.config.DType;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Model directories: single file, sharded with an index, and indexes that disagree with their shards. */
class CheckpointTest {
    private static final String SHARD_1 = TinyLlama.shardName(1, 2);
    private static final String SHARD_2 = TinyLlama.shardName(2, 2);

    @TempDir
    Path dir;

    private static SafetensorsWriter oneTensor(String name, float value) {
        return new SafetensorsWriter().add(name, DType.FLOAT32, new long[] {1}, new float[] {value});
    }

    /** Shard 1 holds a and b, shard 2 holds c; the index is written as given. */
    private Path index(String weightMapJson) {
        new SafetensorsWriter()
                .add("a", DType.FLOAT32, new long[] {1}, new float[] {1})
                .add("b", DType.FLOAT16, new long[] {1}, new float[] {2})
                .write(dir.resolve(SHARD_1));
        oneTensor("c", 3).write(dir.resolve(SHARD_2));
        Path index = dir.resolve(Checkpoint.INDEX_FILE);
        TinyLlama.write(index, "{\"metadata\": {\"total_size\": 10}, \"weight_map\": " + weightMapJson + "}");
        return index;
    }

    private static String weightMap(String shardOfA, String shardOfB, String shardOfC) {
        return "{\"a\": \"" + shardOfA + "\", \"b\": \"" + shardOfB + "\", \"c\": \"" + shardOfC + "\"}";
    }

    private static void assertRejected(Path modelDir, Path source, String tensor, String detail) {
        CheckpointException e = assertThrows(CheckpointException.class, () -> Checkpoint.open(modelDir).close());
        String prefix = tensor == null ? "" : "tensor '" + tensor + "': ";
        assertEquals(source + ": " + prefix + detail, e.getMessage());
        assertEquals(tensor, e.tensor());
    }

    @Test
    void opensASingleFile() {
        Path file = oneTensor("a", 1).write(dir.resolve(Checkpoint.SINGLE_FILE));

        try (Checkpoint checkpoint = Checkpoint.open(dir)) {
            assertEquals(file, checkpoint.source());
            assertEquals(List.of(file), checkpoint.files());
            assertEquals(List.of("a"), List.copyOf(checkpoint.names()));
            assertEquals(1f, checkpoint.tensor("a").get(0));
        }
    }

    @Test
    void opensShardsThroughTheIndexEachOnce() {
        Path index = index(weightMap(SHARD_1, SHARD_1, SHARD_2));

        try (Checkpoint checkpoint = Checkpoint.open(dir)) {
            assertEquals(index, checkpoint.source());
            assertEquals(List.of(dir.resolve(SHARD_1), dir.resolve(SHARD_2)), checkpoint.files());
            assertEquals(List.of("a", "b", "c"), List.copyOf(checkpoint.names()));
            assertEquals(2f, checkpoint.tensor("b").get(0));
            assertEquals(DType.FLOAT16, checkpoint.tensor("b").dtype());
            assertEquals(dir.resolve(SHARD_2), checkpoint.tensor("c").sourceFile());
        }
    }

    @Test
    void prefersTheSingleFileWhenBothLayoutsExist() {
        index(weightMap(SHARD_1, SHARD_1, SHARD_2));
        oneTensor("only", 7).write(dir.resolve(Checkpoint.SINGLE_FILE));

        try (Checkpoint checkpoint = Checkpoint.open(dir)) {
            assertEquals(List.of("only"), List.copyOf(checkpoint.names()));
        }
    }

    @Test
    void namesTheCheckpointAndTensorWhenAskedForAMissingOne() {
        Path file = oneTensor("a", 1).write(dir.resolve(Checkpoint.SINGLE_FILE));

        try (Checkpoint checkpoint = Checkpoint.open(dir)) {
            CheckpointException e = assertThrows(CheckpointException.class, () -> checkpoint.tensor("lm_head.weight"));
            assertEquals(file + ": tensor 'lm_head.weight': no such tensor in the checkpoint", e.getMessage());
        }
    }

    @Test
    void closeUnmapsEveryShard() {
        index(weightMap(SHARD_1, SHARD_1, SHARD_2));
        Checkpoint checkpoint = Checkpoint.open(dir);
        Tensor a = checkpoint.tensor("a");
        Tensor c = checkpoint.tensor("c");

        checkpoint.close();

        assertThrows(IllegalStateException.class, () -> a.get(0));
        assertThrows(IllegalStateException.class, () -> c.get(0));
    }

    @Test
    void directoryWithoutACheckpoint() {
        assertRejected(dir, dir, null,
                "no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are supported)");
    }

    @Test
    void pathThatIsNotADirectory() {
        Path file = oneTensor("a", 1).write(dir.resolve("weights.safetensors"));

        assertRejected(file, file, null, "not a model directory");
        assertRejected(dir.resolve("absent"), dir.resolve("absent"), null, "directory not found");
    }

    @Test
    void missingShard() throws IOException {
        Path index = index(weightMap(SHARD_1, SHARD_1, SHARD_2));
        Files.delete(dir.resolve(SHARD_2));

        assertRejected(dir, index, "c", "shard '" + SHARD_2 + "' does not exist in " + dir);
    }

    @Test
    void tensorNotInTheShardTheIndexNames() {
        Path index = index(weightMap(SHARD_1, SHARD_2, SHARD_2));

        assertRejected(dir, index, "b", "weight_map names shard '" + SHARD_2 + "', which has no such tensor");
    }

    @Test
    void tensorInAShardThatTheIndexDoesNotList() {
        Path index = index("{\"a\": \"" + SHARD_1 + "\", \"c\": \"" + SHARD_2 + "\"}");

        assertRejected(dir, index, "b", "found in shard '" + SHARD_1 + "', but weight_map does not list it");
    }

    @Test
    void shardThatEscapesTheModelDirectory() {
        Path index = index(weightMap(SHARD_1, SHARD_1, "../" + SHARD_2));

        assertRejected(dir, index, "c", "shard '../" + SHARD_2 + "' is not a file name in the model directory");
    }

    @Test
    void weightMapValueThatIsNotAName() {
        Path index = index("{\"a\": 1}");

        assertRejected(dir, index, "a", "weight_map value must be a shard file name, got the number 1");
    }

    @Test
    void indexWithoutWeightMap() {
        Path index = dir.resolve(Checkpoint.INDEX_FILE);
        TinyLlama.write(index, "{\"metadata\": {}}");

        assertRejected(dir, index, null, "index has no field 'weight_map'");
    }

    @Test
    void malformedIndex() {
        Path index = dir.resolve(Checkpoint.INDEX_FILE);
        TinyLlama.write(index, "{\"weight_map\": {\"a\": ");

        assertRejected(dir, index, null,
                "malformed index JSON at line 1, column 22: Unexpected end-of-input within/between Object entries");
    }

    @Test
    void badShardIsNamedByItsOwnPath() throws IOException {
        index(weightMap(SHARD_1, SHARD_1, SHARD_2));
        Path shard = dir.resolve(SHARD_2);
        byte[] bytes = Files.readAllBytes(shard);
        Files.write(shard, Arrays.copyOf(bytes, bytes.length - 1));

        assertRejected(dir, shard, "c", "data_offsets [0, 4] run past the end of the file, whose data section"
                + " holds 3 bytes (truncated file, or a header that does not match its data)");
    }
}
