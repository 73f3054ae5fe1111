package io.kvmix.models.weights;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.models.config.DType;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Writes safetensors files from float arrays, laid out as the reference writer lays them out
 * (tensors back to back in insertion order, header padded with spaces to 8 bytes), so that tests
 * need no data files. {@link #writeRaw} writes any header verbatim, for files that must be wrong.
 */
final class SafetensorsWriter {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int HEADER_ALIGNMENT = 8;

    private record Entry(String dtypeCode, long[] shape, byte[] data) {
    }

    private final Map<String, Entry> entries = new LinkedHashMap<>();
    private final Map<String, String> metadata = new LinkedHashMap<>();

    /** Adds {@code values} (row-major, {@code product(shape)} of them) stored as {@code dtype}. */
    SafetensorsWriter add(String name, DType dtype, long[] shape, float[] values) {
        long count = Arrays.stream(shape).reduce(1, Math::multiplyExact);
        if (count != values.length) {
            throw new IllegalArgumentException(name + ": " + values.length + " values for shape "
                    + Arrays.toString(shape));
        }
        return addRaw(name, SafetensorsDType.code(dtype), shape, encode(dtype, values));
    }

    /** Adds bytes as they are, whatever the dtype code and shape say. */
    SafetensorsWriter addRaw(String name, String dtypeCode, long[] shape, byte[] data) {
        entries.put(name, new Entry(dtypeCode, shape.clone(), data.clone()));
        return this;
    }

    SafetensorsWriter metadata(String key, String value) {
        metadata.put(key, value);
        return this;
    }

    /** The header the reference writer would produce, before padding. */
    String headerJson() {
        ObjectNode root = JSON.createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode meta = root.putObject(SafetensorsHeader.METADATA_KEY);
            metadata.forEach(meta::put);
        }
        long offset = 0;
        for (Map.Entry<String, Entry> e : entries.entrySet()) {
            ObjectNode tensor = root.putObject(e.getKey());
            tensor.put("dtype", e.getValue().dtypeCode());
            ArrayNode shape = tensor.putArray("shape");
            Arrays.stream(e.getValue().shape()).forEach(shape::add);
            tensor.putArray("data_offsets").add(offset).add(offset + e.getValue().data().length);
            offset += e.getValue().data().length;
        }
        return root.toString();
    }

    /** Writes the file, header padded with spaces so that the data starts 8-byte aligned. */
    Path write(Path file) {
        StringBuilder header = new StringBuilder(headerJson());
        while ((SafetensorsHeader.LENGTH_PREFIX_BYTES + utf8Length(header)) % HEADER_ALIGNMENT != 0) {
            header.append(' ');
        }
        ByteArrayOutputStream data = new ByteArrayOutputStream();
        entries.values().forEach(e -> data.writeBytes(e.data()));
        return writeRaw(file, header.toString(), data.toByteArray());
    }

    /** Writes {@code headerJson} verbatim (no padding), preceded by its length, followed by {@code data}. */
    static Path writeRaw(Path file, String headerJson, byte[] data) {
        byte[] header = headerJson.getBytes(StandardCharsets.UTF_8);
        return writeBytes(file, ByteBuffer.allocate(8 + header.length + data.length).order(ByteOrder.LITTLE_ENDIAN)
                .putLong(header.length).put(header).put(data).array());
    }

    static Path writeBytes(Path file, byte[] bytes) {
        try {
            return Files.write(file, bytes);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** {@code values} as little-endian elements of {@code dtype}, rounded to nearest even. */
    static byte[] encode(DType dtype, float[] values) {
        ByteBuffer bytes = ByteBuffer.allocate(values.length * dtype.bytes()).order(ByteOrder.LITTLE_ENDIAN);
        for (float value : values) {
            switch (dtype) {
                case FLOAT16 -> bytes.putShort(Float.floatToFloat16(value));
                case BFLOAT16 -> bytes.putShort(floatToBfloat16(value));
                case FLOAT32 -> bytes.putFloat(value);
            }
        }
        return bytes.array();
    }

    /** The value a file of {@code dtype} holds for {@code value}, widened back to fp32. */
    static float stored(DType dtype, float value) {
        return switch (dtype) {
            case FLOAT16 -> Float.float16ToFloat(Float.floatToFloat16(value));
            case BFLOAT16 -> Float.intBitsToFloat((floatToBfloat16(value) & 0xFFFF) << 16);
            case FLOAT32 -> value;
        };
    }

    /** Round to nearest even on the upper 16 bits, as PyTorch converts; NaN stays a quiet NaN. */
    private static short floatToBfloat16(float value) {
        int bits = Float.floatToRawIntBits(value);
        if (Float.isNaN(value)) {
            return (short) ((bits >>> 16) | 0x40);
        }
        return (short) ((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16);
    }

    private static int utf8Length(CharSequence text) {
        return text.toString().getBytes(StandardCharsets.UTF_8).length;
    }
}
