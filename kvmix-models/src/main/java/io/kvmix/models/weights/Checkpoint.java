package io.kvmix.models.weights;

import static io.kvmix.models.weights.JsonText.describe;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The tensors of a Hugging Face model directory, memory-mapped: either one
 * {@code model.safetensors}, or the shards a {@code model.safetensors.index.json} lists.
 *
 * <p>A sharded checkpoint is checked against its index when it opens, so that a shard missing
 * from a download or an index left over from another revision fails at once, naming the index,
 * the tensor and the shard, rather than as a missing weight later. Every shard is mapped once;
 * {@link #close()} unmaps them all.
 *
 * <p>Like transformers, a directory holding both layouts is read as a single file.
 */
public final class Checkpoint implements AutoCloseable {
    /** The single-file layout. */
    public static final String SINGLE_FILE = "model.safetensors";
    /** The sharded layout's index: {@code {"metadata": {...}, "weight_map": {"TENSOR": "SHARD FILE"}}}. */
    public static final String INDEX_FILE = "model.safetensors.index.json";

    private static final Logger LOG = LoggerFactory.getLogger(Checkpoint.class);

    private final Path directory;
    private final Path source;
    private final List<SafetensorsFile> files;
    /** In index (or header) order. */
    private final Map<String, Tensor> tensors;

    private Checkpoint(Path directory, Path source, List<SafetensorsFile> files, Map<String, Tensor> tensors) {
        this.directory = directory;
        this.source = source;
        this.files = List.copyOf(files);
        this.tensors = Collections.unmodifiableMap(tensors);
        LOG.debug("{}: mapped {} tensors from {} file(s)", source, tensors.size(), files.size());
    }

    /**
     * Maps the checkpoint in {@code modelDir}.
     *
     * @throws CheckpointException naming the directory, index, shard and tensor concerned when the
     *                             checkpoint is absent, unreadable, invalid or inconsistent with its index
     */
    public static Checkpoint open(Path modelDir) {
        Objects.requireNonNull(modelDir, "modelDir");
        if (!Files.isDirectory(modelDir)) {
            throw new CheckpointException(modelDir, null,
                    Files.exists(modelDir) ? "not a model directory" : "directory not found");
        }
        Path single = modelDir.resolve(SINGLE_FILE);
        Path index = modelDir.resolve(INDEX_FILE);
        if (Files.exists(single)) {
            if (Files.exists(index)) {
                LOG.debug("{}: both {} and {} exist; reading {} as transformers does", modelDir, SINGLE_FILE,
                        INDEX_FILE, SINGLE_FILE);
            }
            SafetensorsFile file = SafetensorsFile.open(single);
            return new Checkpoint(modelDir, single, List.of(file), tensorsOf(file));
        }
        if (Files.exists(index)) {
            return openSharded(modelDir, index);
        }
        throw new CheckpointException(modelDir, null, "no " + SINGLE_FILE + " or " + INDEX_FILE
                + " (only safetensors checkpoints are supported)");
    }

    private static Map<String, Tensor> tensorsOf(SafetensorsFile file) {
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        file.names().forEach(name -> tensors.put(name, file.tensor(name)));
        return tensors;
    }

    private static Checkpoint openSharded(Path modelDir, Path index) {
        Map<String, String> shardOfTensor = readWeightMap(modelDir, index);
        Map<String, SafetensorsFile> shards = new LinkedHashMap<>();
        try {
            for (Map.Entry<String, String> mapping : shardOfTensor.entrySet()) {
                String shardName = mapping.getValue();
                if (!shards.containsKey(shardName)) {
                    Path shardPath = modelDir.resolve(shardName);
                    if (!Files.exists(shardPath)) {
                        throw new CheckpointException(index, mapping.getKey(), "shard '" + shardName
                                + "' does not exist in " + modelDir);
                    }
                    shards.put(shardName, SafetensorsFile.open(shardPath));
                }
            }
            Map<String, Tensor> tensors = new LinkedHashMap<>();
            for (Map.Entry<String, String> mapping : shardOfTensor.entrySet()) {
                SafetensorsFile shard = shards.get(mapping.getValue());
                if (!shard.contains(mapping.getKey())) {
                    throw new CheckpointException(index, mapping.getKey(), "weight_map names shard '"
                            + mapping.getValue() + "', which has no such tensor");
                }
                tensors.put(mapping.getKey(), shard.tensor(mapping.getKey()));
            }
            rejectUnlisted(index, shards, shardOfTensor);
            return new Checkpoint(modelDir, index, new ArrayList<>(shards.values()), tensors);
        } catch (RuntimeException e) {
            shards.values().forEach(SafetensorsFile::close);
            throw e;
        }
    }

    /**
     * A tensor in a shard that the index does not list means the index and shards come from
     * different revisions; loading either view could silently run the wrong weights.
     */
    private static void rejectUnlisted(Path index, Map<String, SafetensorsFile> shards,
                                       Map<String, String> shardOfTensor) {
        for (Map.Entry<String, SafetensorsFile> shard : shards.entrySet()) {
            for (String name : shard.getValue().names()) {
                if (!shard.getKey().equals(shardOfTensor.get(name))) {
                    String listed = shardOfTensor.containsKey(name)
                            ? "weight_map places it in shard '" + shardOfTensor.get(name) + "'"
                            : "weight_map does not list it";
                    throw new CheckpointException(index, name, "found in shard '" + shard.getKey() + "', but "
                            + listed);
                }
            }
        }
    }

    /** The index's {@code weight_map}: tensor name to shard file name, each shard inside {@code modelDir}. */
    private static Map<String, String> readWeightMap(Path modelDir, Path index) {
        byte[] json;
        try {
            json = Files.readAllBytes(index);
        } catch (IOException e) {
            throw new CheckpointException(index, null, "cannot read: " + e.getMessage(), e);
        }
        ObjectNode root = JsonText.parseObject(json, index, "index");
        JsonNode weightMap = root.get("weight_map");
        if (weightMap == null) {
            throw new CheckpointException(index, null, "index has no field 'weight_map'");
        }
        if (!weightMap.isObject()) {
            throw new CheckpointException(index, null, "field 'weight_map' must be an object, got "
                    + describe(weightMap));
        }
        Path normalizedDir = modelDir.toAbsolutePath().normalize();
        Map<String, String> shardOfTensor = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> entry : weightMap.properties()) {
            JsonNode shard = entry.getValue();
            if (!shard.isTextual() || shard.textValue().isEmpty()) {
                throw new CheckpointException(index, entry.getKey(),
                        "weight_map value must be a shard file name, got " + describe(shard));
            }
            Path resolved = normalizedDir.resolve(shard.textValue()).normalize();
            if (!normalizedDir.equals(resolved.getParent())) {
                throw new CheckpointException(index, entry.getKey(), "shard '" + shard.textValue()
                        + "' is not a file name in the model directory");
            }
            shardOfTensor.put(entry.getKey(), shard.textValue());
        }
        return shardOfTensor;
    }

    /** The model directory. */
    public Path directory() {
        return directory;
    }

    /**
     * The file that defines the checkpoint's contents: {@code model.safetensors}, or the index of a
     * sharded one. Errors about the checkpoint as a whole (a missing tensor) name it.
     */
    public Path source() {
        return source;
    }

    /** The mapped safetensors files, each once. */
    public List<Path> files() {
        return files.stream().map(SafetensorsFile::path).toList();
    }

    /** All tensor names, in index (or header) order. */
    public Set<String> names() {
        return tensors.keySet();
    }

    public boolean contains(String name) {
        return tensors.containsKey(name);
    }

    /**
     * The tensor called {@code name}, in whichever shard holds it.
     *
     * @throws CheckpointException naming {@link #source()} (in the model directory) and {@code name}
     *                             when the checkpoint has no such tensor
     */
    public Tensor tensor(String name) {
        Tensor tensor = tensors.get(name);
        if (tensor == null) {
            throw new CheckpointException(source, name, "no such tensor in the checkpoint");
        }
        return tensor;
    }

    /** Unmaps every file; tensors handed out become unreadable. Idempotent. */
    @Override
    public void close() {
        files.forEach(SafetensorsFile::close);
    }

    @Override
    public String toString() {
        return source + " (" + tensors.size() + " tensors in " + files.size() + " file(s))";
    }
}
