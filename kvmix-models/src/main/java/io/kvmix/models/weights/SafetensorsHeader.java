package io.kvmix.models.weights;

import static io.kvmix.models.weights.JsonText.describe;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.models.config.DType;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The validated header of one safetensors file: where every tensor's bytes lie.
 *
 * <pre>
 *   [8 bytes]  N, unsigned little-endian
 *   [N bytes]  UTF-8 JSON: {"NAME": {"dtype": "BF16", "shape": [4096, 4096], "data_offsets": [BEGIN, END]},
 *                           ..., "__metadata__": {"format": "pt"}}
 *   [rest]     the data section; BEGIN and END are byte offsets into it
 * </pre>
 *
 * <p>Everything a header claims is checked against the file before any tensor is handed out, so
 * that every later read stays inside the mapping: a truncated download or a header that lies
 * fails here with the file and tensor named, instead of as an out-of-bounds access (or, with a
 * less careful reader, a JVM crash or silently wrong weights) in the middle of a forward pass.
 *
 * @param dataStart byte offset of the data section in the file ({@code 8 + N})
 * @param entries   the tensors in header order
 * @param metadata  the free-form {@code __metadata__} strings (empty when absent)
 */
record SafetensorsHeader(long dataStart, List<Entry> entries, Map<String, String> metadata) {
    /** Bytes of the little-endian header length that starts every file. */
    static final int LENGTH_PREFIX_BYTES = 8;
    /** The reference implementation's limit; a larger N means the file is not safetensors at all. */
    static final long MAX_HEADER_BYTES = 100_000_000L;
    static final String METADATA_KEY = "__metadata__";

    private static final ValueLayout.OfLong LENGTH_LAYOUT =
            ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /**
     * One tensor as the header describes it, already checked for consistency with itself and the file.
     *
     * @param begin offset of the first byte in the data section
     * @param end   offset one past the last byte in the data section
     */
    record Entry(String name, DType dtype, long[] shape, long begin, long end) {
        long byteLength() {
            return end - begin;
        }

        String offsets() {
            return "[" + begin + ", " + end + "]";
        }
    }

    SafetensorsHeader {
        entries = List.copyOf(entries);
        metadata = Map.copyOf(metadata);
    }

    /**
     * Reads and validates the header of the mapped file {@code file}.
     *
     * @throws CheckpointException naming the file (and the tensor, where one is at fault)
     */
    static SafetensorsHeader read(Path file, MemorySegment mapping) {
        long fileSize = mapping.byteSize();
        if (fileSize < LENGTH_PREFIX_BYTES) {
            throw new CheckpointException(file, null, "file is " + fileSize
                    + " bytes, too short to hold the 8-byte header length that starts a safetensors file");
        }
        long headerLength = mapping.get(LENGTH_LAYOUT, 0);
        long room = fileSize - LENGTH_PREFIX_BYTES;
        if (headerLength < 0 || headerLength > room) {
            throw new CheckpointException(file, null, "header length " + Long.toUnsignedString(headerLength)
                    + " is larger than the " + room + " bytes that follow it (truncated, or not a safetensors file)");
        }
        if (headerLength > MAX_HEADER_BYTES) {
            throw new CheckpointException(file, null, "header length " + headerLength + " exceeds the limit of "
                    + MAX_HEADER_BYTES + " bytes (not a safetensors file?)");
        }
        byte[] json = mapping.asSlice(LENGTH_PREFIX_BYTES, headerLength).toArray(ValueLayout.JAVA_BYTE);
        ObjectNode root = JsonText.parseObject(json, file, "header");

        long dataStart = LENGTH_PREFIX_BYTES + headerLength;
        List<Entry> entries = new ArrayList<>();
        Map<String, String> metadata = Map.of();
        for (Map.Entry<String, JsonNode> field : root.properties()) {
            if (field.getKey().equals(METADATA_KEY)) {
                metadata = metadata(file, field.getValue());
            } else {
                entries.add(entry(file, field.getKey(), field.getValue()));
            }
        }
        checkLayout(file, entries, fileSize - dataStart);
        return new SafetensorsHeader(dataStart, entries, metadata);
    }

    private static Map<String, String> metadata(Path file, JsonNode node) {
        if (!node.isObject()) {
            throw new CheckpointException(file, null, METADATA_KEY + " must be an object of strings, got "
                    + describe(node));
        }
        Map<String, String> metadata = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> field : node.properties()) {
            if (!field.getValue().isTextual()) {
                throw new CheckpointException(file, null, METADATA_KEY + "['" + field.getKey()
                        + "'] must be a string, got " + describe(field.getValue()));
            }
            metadata.put(field.getKey(), field.getValue().textValue());
        }
        return metadata;
    }

    /** One header entry, checked on its own: fields present and typed, dtype supported, sizes agree. */
    private static Entry entry(Path file, String name, JsonNode node) {
        if (!node.isObject()) {
            throw new CheckpointException(file, name, "header entry must be an object, got " + describe(node));
        }
        JsonNode dtypeNode = required(file, name, node, "dtype");
        if (!dtypeNode.isTextual()) {
            throw new CheckpointException(file, name, "field 'dtype' must be a string, got " + describe(dtypeNode));
        }
        String dtypeCode = dtypeNode.textValue();
        DType dtype = SafetensorsDType.fromCode(dtypeCode).orElseThrow(() -> new CheckpointException(file, name,
                "dtype '" + dtypeCode + "' is not supported (supported: " + SafetensorsDType.supportedCodes() + ")"));

        long[] shape = integers(file, name, node, "shape", "an array of integers");
        for (long dim : shape) {
            if (dim < 0) {
                throw new CheckpointException(file, name, "shape " + Arrays.toString(shape)
                        + " has a negative dimension");
            }
        }
        long[] offsets = integers(file, name, node, "data_offsets", "[begin, end], two non-negative integers");
        if (offsets.length != 2 || offsets[0] < 0 || offsets[1] < 0) {
            throw new CheckpointException(file, name, "field 'data_offsets' must be [begin, end], two non-negative"
                    + " integers, got " + describe(node.get("data_offsets")));
        }
        Entry entry = new Entry(name, dtype, shape, offsets[0], offsets[1]);
        if (entry.end() < entry.begin()) {
            throw new CheckpointException(file, name, "data_offsets " + entry.offsets() + " end before they begin");
        }
        long expectedBytes = byteLength(file, name, shape, dtype);
        if (entry.byteLength() != expectedBytes) {
            throw new CheckpointException(file, name, "data_offsets " + entry.offsets() + " hold "
                    + entry.byteLength() + " bytes, but shape " + Arrays.toString(shape) + " of " + dtypeCode
                    + " needs " + expectedBytes);
        }
        return entry;
    }

    private static JsonNode required(Path file, String name, JsonNode entry, String field) {
        JsonNode value = entry.get(field);
        if (value == null) {
            throw new CheckpointException(file, name, "header entry has no field '" + field + "'");
        }
        return value;
    }

    /** A required array of integers that fit a {@code long}. */
    private static long[] integers(Path file, String name, JsonNode entry, String field, String expected) {
        JsonNode array = required(file, name, entry, field);
        boolean valid = array.isArray();
        long[] values = new long[valid ? array.size() : 0];
        for (int i = 0; valid && i < values.length; i++) {
            JsonNode element = array.get(i);
            valid = element.isIntegralNumber() && element.canConvertToLong();
            values[i] = element.longValue();
        }
        if (!valid) {
            throw new CheckpointException(file, name,
                    "field '" + field + "' must be " + expected + ", got " + describe(array));
        }
        return values;
    }

    private static long byteLength(Path file, String name, long[] shape, DType dtype) {
        try {
            long bytes = dtype.bytes();
            for (long dim : shape) {
                bytes = Math.multiplyExact(bytes, dim);
            }
            return bytes;
        } catch (ArithmeticException e) {
            throw new CheckpointException(file, name, "shape " + Arrays.toString(shape)
                    + " has more bytes than a file can hold", e);
        }
    }

    /**
     * Checks the entries against each other and the file: in data order, every tensor must end
     * inside the data section and must not share bytes with an earlier one. Walking in data order
     * makes a truncated file report the first tensor that was cut off. Gaps between tensors are
     * allowed: nothing reads them.
     */
    private static void checkLayout(Path file, List<Entry> entries, long dataBytes) {
        List<Entry> inDataOrder = entries.stream()
                .sorted(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end))
                .toList();
        Entry furthest = null;
        for (Entry entry : inDataOrder) {
            if (entry.end() > dataBytes) {
                throw new CheckpointException(file, entry.name(), "data_offsets " + entry.offsets()
                        + " run past the end of the file, whose data section holds " + dataBytes
                        + " bytes (truncated file, or a header that does not match its data)");
            }
            boolean overlaps = furthest != null && entry.byteLength() > 0 && entry.begin() < furthest.end();
            if (overlaps) {
                throw new CheckpointException(file, entry.name(), "data_offsets " + entry.offsets()
                        + " overlap those of tensor '" + furthest.name() + "' " + furthest.offsets());
            }
            if (furthest == null || entry.end() > furthest.end()) {
                furthest = entry;
            }
        }
    }
}
