package io.kvmix.models.weights;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * One {@code .safetensors} file, memory-mapped read-only, with its header validated.
 *
 * <p>The whole file is mapped once into a shared {@link Arena} this object owns: tensors are
 * slices of that mapping, readable from any thread (the forward pass uses all cores), and the
 * operating system pages weights in as they are used. {@link #close()} unmaps the file; tensors
 * handed out before then stop being readable (an {@link IllegalStateException}, not a crash).
 *
 * <p>Opening fails with a {@link CheckpointException} naming this file, and the tensor where one is
 * at fault, for anything a header can get wrong; see {@link SafetensorsHeader}. The file must not
 * be truncated while it is open: memory-mapped I/O gives no way to survive that.
 */
public final class SafetensorsFile implements AutoCloseable {
    private final Path path;
    private final Arena arena;
    private final MemorySegment mapping;
    /** In header order. */
    private final Map<String, Tensor> tensors;
    private final Map<String, String> metadata;
    private final AtomicBoolean closed = new AtomicBoolean();

    private SafetensorsFile(Path path, Arena arena, MemorySegment mapping, SafetensorsHeader header) {
        this.path = path;
        this.arena = arena;
        this.mapping = mapping;
        this.metadata = header.metadata();
        Map<String, Tensor> byName = new LinkedHashMap<>();
        for (SafetensorsHeader.Entry entry : header.entries()) {
            MemorySegment data = mapping.asSlice(header.dataStart() + entry.begin(), entry.byteLength());
            byName.put(entry.name(), new Tensor(entry.name(), entry.dtype(), entry.shape(), data, path));
        }
        this.tensors = Collections.unmodifiableMap(byName);
    }

    /**
     * Maps and validates {@code path}.
     *
     * @throws CheckpointException naming the file if it is missing, unreadable, or not a valid safetensors file
     */
    public static SafetensorsFile open(Path path) {
        Objects.requireNonNull(path, "path");
        if (!Files.isRegularFile(path)) {
            throw new CheckpointException(path, null, Files.exists(path) ? "not a regular file" : "file not found");
        }
        Arena arena = Arena.ofShared();
        try {
            MemorySegment mapping;
            try (FileChannel channel = FileChannel.open(path, StandardOpenOption.READ)) {
                mapping = channel.map(FileChannel.MapMode.READ_ONLY, 0, channel.size(), arena);
            }
            return new SafetensorsFile(path, arena, mapping, SafetensorsHeader.read(path, mapping));
        } catch (NoSuchFileException e) {
            arena.close();
            throw new CheckpointException(path, null, "file not found", e);
        } catch (IOException e) {
            arena.close();
            throw new CheckpointException(path, null, "cannot map: " + e.getMessage(), e);
        } catch (RuntimeException | Error e) {
            arena.close();
            throw e;
        }
    }

    /** The file this object mapped. */
    public Path path() {
        return path;
    }

    /** Size of the mapped file in bytes. */
    public long byteSize() {
        return mapping.byteSize();
    }

    /** Tensor names in header order. */
    public Set<String> names() {
        return tensors.keySet();
    }

    public boolean contains(String name) {
        return tensors.containsKey(name);
    }

    /**
     * The tensor called {@code name}.
     *
     * @throws CheckpointException naming this file and {@code name} if there is no such tensor
     */
    public Tensor tensor(String name) {
        Tensor tensor = tensors.get(name);
        if (tensor == null) {
            throw new CheckpointException(path, name, "no such tensor in this file");
        }
        return tensor;
    }

    /** The header's free-form {@code __metadata__} (e.g. {@code format=pt}); empty when absent. */
    public Map<String, String> metadata() {
        return metadata;
    }

    /** Unmaps the file; idempotent. */
    @Override
    public void close() {
        if (closed.compareAndSet(false, true)) {
            arena.close();
        }
    }

    @Override
    public String toString() {
        return path + " (" + tensors.size() + " tensors, " + mapping.byteSize() + " bytes)";
    }
}
