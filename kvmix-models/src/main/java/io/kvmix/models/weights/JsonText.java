package io.kvmix.models.weights;

import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/** Reads the two JSON texts of a checkpoint (a safetensors header, a sharded index) into objects. */
final class JsonText {
    /**
     * Duplicate keys are an error: a header naming a tensor twice, or an index mapping one tensor
     * to two shards, has no single meaning (Python's json would silently keep the last).
     */
    private static final ObjectMapper MAPPER = JsonMapper.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .build();

    /** Longest JSON excerpt a message quotes; a corrupt header can hold megabytes in one value. */
    private static final int MAX_SHOWN_CHARS = 60;

    private JsonText() {
    }

    /**
     * Parses UTF-8 JSON whose top level must be an object.
     *
     * @param what what the text is, for messages ({@code "header"}, {@code "index"})
     * @throws CheckpointException naming {@code source} if the text is not UTF-8, not JSON or not an object
     */
    static ObjectNode parseObject(byte[] utf8, Path source, String what) {
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder().decode(ByteBuffer.wrap(utf8)).toString();
        } catch (CharacterCodingException e) {
            throw new CheckpointException(source, null, what + " is not valid UTF-8", e);
        }
        JsonNode tree;
        try {
            tree = MAPPER.readTree(text);
        } catch (JsonProcessingException e) {
            JsonLocation at = e.getLocation();
            String where = at == null ? "" : " at line " + at.getLineNr() + ", column " + at.getColumnNr();
            throw new CheckpointException(source, null, "malformed " + what + " JSON" + where + ": " + reason(e), e);
        }
        if (tree == null || tree.isMissingNode()) {
            throw new CheckpointException(source, null, "malformed " + what + " JSON: the text is empty");
        }
        if (!(tree instanceof ObjectNode object)) {
            throw new CheckpointException(source, null, what + " must be a JSON object, got " + describe(tree));
        }
        return object;
    }

    /** A value as a message shows it: {@code the string "x"}, {@code the number 3}, {@code an array}. */
    static String describe(JsonNode node) {
        if (node == null || node.isMissingNode()) {
            return "nothing";
        }
        if (node.isNull()) {
            return "null";
        }
        if (node.isTextual()) {
            return "the string " + abbreviate(node.toString());
        }
        if (node.isNumber()) {
            return "the number " + node;
        }
        if (node.isBoolean()) {
            return node.toString();
        }
        return node.isArray() ? "the array " + abbreviate(node.toString()) : "an object";
    }

    private static String abbreviate(String json) {
        return json.length() <= MAX_SHOWN_CHARS ? json : json.substring(0, MAX_SHOWN_CHARS) + "...";
    }

    /** Jackson's reason without the source excerpt it appends on later lines. */
    private static String reason(JsonProcessingException e) {
        String reason = e.getOriginalMessage();
        if (reason == null) {
            return e.getClass().getSimpleName();
        }
        if (reason.startsWith("Trailing token")) {
            return "unexpected text after the top-level object";
        }
        int newline = reason.indexOf('\n');
        return (newline >= 0 ? reason.substring(0, newline) : reason).strip();
    }
}
