package io.kvmix.models.weights;

import java.nio.file.Path;

/**
 * A checkpoint that cannot be used: a file that is missing, truncated or not safetensors, a
 * header that lies about where its tensors are, a sharded index that disagrees with its shards,
 * or tensors that do not match the model's config.
 *
 * <p>The message always reads {@code FILE: DETAIL}, and DETAIL names the tensor when one is at
 * fault ({@code /m/model.safetensors: tensor 'lm_head.weight': data_offsets [0, 800] run past the
 * end of the file ...}), so that a CLI can print it as its one error line and a user knows which
 * file to look at. {@link #tensor()} gives the tensor name to callers that want to react to it.
 */
public final class CheckpointException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final transient Path source;
    private final String tensor;
    private final String detail;

    CheckpointException(Path source, String tensor, String detail) {
        this(source, tensor, detail, null);
    }

    CheckpointException(Path source, String tensor, String detail, Throwable cause) {
        super(source + ": " + (tensor == null ? "" : "tensor '" + tensor + "': ") + detail, cause);
        this.source = source;
        this.tensor = tensor;
        this.detail = detail;
    }

    /** The file (or, for a checkpoint-wide problem with no better file, the directory) at fault. */
    public Path source() {
        return source;
    }

    /** The tensor at fault, or {@code null} when the error is not about one tensor. */
    public String tensor() {
        return tensor;
    }

    /** The message without the {@code FILE: } and {@code tensor 'NAME': } prefixes. */
    public String detail() {
        return detail;
    }
}
