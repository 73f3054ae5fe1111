package io.kvmix.examples.cli;

import com.fasterxml.jackson.databind.JsonNode;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** Token-id files of the CLI: a flat JSON array of ints, or an array of arrays. Ids are used verbatim. */
final class TokenInput {
    private TokenInput() {
    }

    /** Reads a flat array, or an array of arrays (each one sequence). */
    static List<int[]> read(Path file) {
        JsonNode root;
        try {
            root = JsonOutput.MAPPER.readTree(file.toFile());
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": " + e.getMessage(), e);
        }
        if (root == null || !root.isArray() || root.isEmpty()) {
            throw new IllegalArgumentException(file + ": expected a non-empty JSON array of token ids or of arrays of ids");
        }
        List<int[]> sequences = new ArrayList<>();
        if (root.get(0).isArray()) {
            for (int s = 0; s < root.size(); s++) {
                sequences.add(ids(root.get(s), file, "[" + s + "]"));
            }
        } else {
            sequences.add(ids(root, file, ""));
        }
        return sequences;
    }

    /** A flat array of ids (a prompt). */
    static int[] readFlat(Path file) {
        List<int[]> sequences = read(file);
        if (sequences.size() != 1) {
            throw new IllegalArgumentException(file + ": expected a flat JSON array of token ids");
        }
        return sequences.getFirst();
    }

    private static int[] ids(JsonNode array, Path file, String where) {
        if (!array.isArray()) {
            throw new IllegalArgumentException(file + where + ": expected an array of token ids");
        }
        int[] ids = new int[array.size()];
        for (int i = 0; i < ids.length; i++) {
            JsonNode id = array.get(i);
            if (!id.isIntegralNumber() || !id.canConvertToInt() || id.asInt() < 0) {
                throw new IllegalArgumentException(file + where + "[" + i + "]: " + id + " is not a token id");
            }
            ids[i] = id.asInt();
        }
        return ids;
    }
}
