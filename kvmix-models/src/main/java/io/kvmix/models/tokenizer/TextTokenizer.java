package io.kvmix.models.tokenizer;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * A model directory's {@code tokenizer.json} through DJL's Hugging Face tokenizers (native, offline).
 * Truncation and padding are off: DJL would otherwise cut inputs at 512 tokens.
 */
public final class TextTokenizer implements AutoCloseable {
    public static final String FILE_NAME = "tokenizer.json";

    private final Path file;
    private final HuggingFaceTokenizer withSpecialTokens;
    private final HuggingFaceTokenizer plain;

    private TextTokenizer(Path file, HuggingFaceTokenizer withSpecialTokens, HuggingFaceTokenizer plain) {
        this.file = file;
        this.withSpecialTokens = withSpecialTokens;
        this.plain = plain;
    }

    /** Opens {@code DIR/tokenizer.json} (or the file itself). */
    public static TextTokenizer open(Path modelDirOrFile) {
        Path file = Files.isDirectory(modelDirOrFile) ? modelDirOrFile.resolve(FILE_NAME) : modelDirOrFile;
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException(file + ": tokenizer file not found");
        }
        try {
            HuggingFaceTokenizer special = build(file, true);
            try {
                return new TextTokenizer(file, special, build(file, false));
            } catch (IOException | RuntimeException e) {
                special.close();
                throw e;
            }
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": " + e.getMessage(), e);
        } catch (RuntimeException e) {
            throw new IllegalArgumentException(file + ": cannot load tokenizer: " + e.getMessage(), e);
        }
    }

    private static HuggingFaceTokenizer build(Path file, boolean addSpecialTokens) throws IOException {
        return HuggingFaceTokenizer.builder()
                .optTokenizerPath(file)
                .optAddSpecialTokens(addSpecialTokens)
                .optTruncation(false)
                .optPadding(false)
                .build();
    }

    /** Token ids of a prompt, with the special tokens (e.g. BOS) the tokenizer's template adds. */
    public int[] encodePrompt(String text) {
        return toInts(withSpecialTokens.encode(text).getIds());
    }

    /** Token ids of running text, without special tokens (for perplexity over a corpus). */
    public int[] encodeText(String text) {
        return toInts(plain.encode(text).getIds());
    }

    /** Text of {@code ids}, special tokens skipped. */
    public String decode(int[] ids) {
        long[] longs = new long[ids.length];
        for (int i = 0; i < ids.length; i++) {
            longs[i] = ids[i];
        }
        return plain.decode(longs, true);
    }

    public Path file() {
        return file;
    }

    private static int[] toInts(long[] ids) {
        int[] out = new int[ids.length];
        for (int i = 0; i < ids.length; i++) {
            out[i] = Math.toIntExact(ids[i]);
        }
        return out;
    }

    @Override
    public void close() {
        withSpecialTokens.close();
        plain.close();
    }
}
