package io.kvmix.models.config;

/**
 * A {@code config.json} that cannot be used: missing, unreadable, malformed, of an unsupported
 * model, or inconsistent.
 *
 * <p>The message always reads {@code SOURCE: DETAIL} (for example
 * {@code config.json: rope_scaling type 'llama3' is not supported}) so that a CLI can print it as
 * its one error line. {@link #field()} names the offending JSON field, in dotted / indexed form
 * ({@code rope_parameters.rope_theta}, {@code eos_token_id[1]}), for callers that want to react
 * to it; it is {@code null} when no single field is at fault (file not found, malformed JSON).
 */
public final class ConfigException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final String source;
    private final String field;
    private final String detail;

    ConfigException(String source, String field, String detail) {
        this(source, field, detail, null);
    }

    ConfigException(String source, String field, String detail, Throwable cause) {
        super(source == null ? detail : source + ": " + detail, cause);
        this.source = source;
        this.field = field;
        this.detail = detail;
    }

    /**
     * The file (or caller-supplied name) the configuration came from; {@code null} when the
     * error was raised by constructing a {@link ModelConfig} directly rather than parsing.
     */
    public String source() {
        return source;
    }

    /** The JSON field at fault, or {@code null} when the error is not about one field. */
    public String field() {
        return field;
    }

    /** The message without the {@code SOURCE: } prefix. */
    public String detail() {
        return detail;
    }

    /** The same error attributed to {@code newSource}; used when record validation runs under a parser. */
    ConfigException withSource(String newSource) {
        ConfigException copy = new ConfigException(newSource, field, detail, getCause());
        copy.setStackTrace(getStackTrace());
        return copy;
    }
}
