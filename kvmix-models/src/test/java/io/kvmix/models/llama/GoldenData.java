package io.kvmix.models.llama;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.core.plan.PlanFiles;
import io.kvmix.core.plan.QuantPlan;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * The checkpoints and transformers goldens of {@code src-test-data} (see its README): paths, the
 * golden JSON, the golden tensors, the decode-perplexity windows and the reference plans. Tests run
 * in the module directory, so the data is at {@code ../src-test-data}.
 */
public final class GoldenData {
    public static final Path ROOT = Path.of("..", "src-test-data");
    public static final String LLAMA = "tiny-llama-gqa";
    public static final String MISTRAL = "tiny-mistral-swa";
    /** The plans of {@code decode_ppl_quant}, named as in the JSON and the plan files. */
    public static final List<String> PLANS = List.of("k2v2", "k4v4", "k1v1", "mixed_k3v4_first3_last");

    private static final ObjectMapper JSON = new ObjectMapper();

    private GoldenData() {
    }

    public static Path modelDir(String model) {
        return ROOT.resolve("models").resolve(model);
    }

    /** {@code goldens/<model>.json}. */
    public static JsonNode golden(String model) {
        return readJson(ROOT.resolve("goldens").resolve(model + ".json"));
    }

    /**
     * An fp32 tensor of {@code goldens/<model>.safetensors}. Read here rather than with
     * {@link io.kvmix.models.weights.SafetensorsFile}, which refuses the whole file because its
     * quantizer test vectors are stored as U8.
     */
    public static float[] goldenTensor(String model, String name) {
        Path file = ROOT.resolve("goldens").resolve(model + ".safetensors");
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            long headerLength = readLong(channel);
            JsonNode entry = readHeader(channel, headerLength).get(name);
            if (entry == null || !entry.get("dtype").asText().equals("F32")) {
                throw new IllegalArgumentException(file + ": no F32 tensor " + name);
            }
            long begin = entry.get("data_offsets").get(0).longValue();
            long end = entry.get("data_offsets").get(1).longValue();
            ByteBuffer data = ByteBuffer.allocate(Math.toIntExact(end - begin)).order(ByteOrder.LITTLE_ENDIAN);
            channel.read(data, 8 + headerLength + begin);
            if (data.hasRemaining()) {
                throw new IllegalArgumentException(file + ": " + name + " is truncated");
            }
            float[] values = new float[data.capacity() / 4];
            data.flip().asFloatBuffer().get(values);
            return values;
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": " + e.getMessage(), e);
        }
    }

    private static long readLong(FileChannel channel) throws IOException {
        ByteBuffer prefix = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
        channel.read(prefix, 0);
        return prefix.getLong(0);
    }

    private static JsonNode readHeader(FileChannel channel, long headerLength) throws IOException {
        ByteBuffer header = ByteBuffer.allocate(Math.toIntExact(headerLength));
        channel.read(header, 8);
        return JSON.readTree(header.array());
    }

    /** The 8 windows of 512 ids of {@code data/heldout_ids.json}. */
    public static List<int[]> windows() {
        JsonNode all = readJson(ROOT.resolve("data").resolve("heldout_ids.json"));
        List<int[]> windows = new ArrayList<>();
        all.forEach(window -> windows.add(ints(window)));
        return windows;
    }

    /** {@code goldens/plans/<model>.<plan>.json}, the reference {@code quant_bits} format. */
    public static QuantPlan plan(String model, String plan) {
        try {
            return PlanFiles.read(ROOT.resolve("goldens").resolve("plans").resolve(model + "." + plan + ".json"));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    public static int[] ints(JsonNode array) {
        int[] values = new int[array.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = array.get(i).intValue();
        }
        return values;
    }

    public static double[] doubles(JsonNode array) {
        double[] values = new double[array.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = array.get(i).doubleValue();
        }
        return values;
    }

    public static JsonNode readJson(Path file) {
        try {
            return JSON.readTree(file.toFile());
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": " + e.getMessage(), e);
        }
    }

    /**
     * A copy of {@code model}'s directory in {@code dir} with config.json rewritten by
     * {@code editConfig} (copied, not linked: JUnit warns about links out of a temporary directory).
     */
    public static Path copyWithConfig(String model, Path dir, Consumer<ObjectNode> editConfig) {
        try (var files = Files.list(modelDir(model))) {
            for (Path file : files.toList()) {
                Path target = dir.resolve(file.getFileName().toString());
                if (file.getFileName().toString().equals("config.json")) {
                    ObjectNode config = (ObjectNode) readJson(file);
                    editConfig.accept(config);
                    Files.writeString(target, config.toPrettyString());
                } else {
                    Files.copy(file, target);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return dir;
    }

    /**
     * A copy of {@code model}'s directory in {@code dir} (files copied, so the checkpoint can be
     * edited) where element {@code index} of tensor {@code tensor} in model.safetensors is replaced
     * by the 16-bit pattern {@code bits} (the checkpoints are fp16 / bf16).
     */
    public static Path copyWithPlantedValue(String model, Path dir, String tensor, long index, short bits) {
        Path source = modelDir(model);
        try (var files = Files.list(source)) {
            for (Path file : files.toList()) {
                Files.copy(file, dir.resolve(file.getFileName().toString()));
            }
            Path weights = dir.resolve("model.safetensors");
            long headerLength;
            JsonNode header;
            try (FileChannel channel = FileChannel.open(weights, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
                headerLength = readLong(channel);
                header = readHeader(channel, headerLength);
                JsonNode entry = header.get(tensor);
                if (entry == null) {
                    throw new IllegalArgumentException(weights + ": no tensor " + tensor);
                }
                String dtype = entry.get("dtype").asText();
                if (!dtype.equals("F16") && !dtype.equals("BF16")) {
                    throw new IllegalArgumentException(tensor + " is " + dtype + ", expected a 16-bit type");
                }
                long begin = entry.get("data_offsets").get(0).longValue();
                long end = entry.get("data_offsets").get(1).longValue();
                if (begin + 2 * index + 2 > end) {
                    throw new IllegalArgumentException(tensor + " has no element " + index);
                }
                ByteBuffer value = ByteBuffer.allocate(2).order(ByteOrder.LITTLE_ENDIAN).putShort(0, bits);
                channel.write(value, 8 + headerLength + begin + 2 * index);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return dir;
    }
}
