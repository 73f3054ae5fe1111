package io.kvmix.core.plan;

import java.io.Serial;
import java.util.List;
import java.util.Objects;

/**
 * A plan (or plan file) has one or more problems. All of them are reported together, so that a
 * user fixing a hand-edited file sees every mistake in one run instead of one per run.
 *
 * <p>The message holds one problem per line, each prefixed with {@code source + ": "} when the
 * source (usually a file path) is known, e.g.
 * <pre>
 * plan.json: layer 0: k_bits=7, must be 1-4
 * plan.json: layer 5: v_residual_ratio=1.5, must be in [0, 1]
 * </pre>
 */
public final class PlanValidationException extends IllegalArgumentException {
    @Serial
    private static final long serialVersionUID = 1L;

    private final String source;
    private final String[] problems;

    /**
     * @param source   where the plan came from (a file path), or null when unknown
     * @param problems at least one problem, without the source prefix
     */
    public PlanValidationException(String source, List<String> problems) {
        super(message(source, problems));
        this.source = source;
        this.problems = problems.toArray(String[]::new);
    }

    private static String message(String source, List<String> problems) {
        Objects.requireNonNull(problems, "problems");
        if (problems.isEmpty()) {
            throw new IllegalArgumentException("a PlanValidationException needs at least one problem");
        }
        String prefix = source == null ? "" : source + ": ";
        return String.join("\n", problems.stream().map(problem -> prefix + problem).toList());
    }

    /** The source the plan came from (usually a file path), or null when unknown. */
    public String source() {
        return source;
    }

    /** Every problem found, in the order found, without the source prefix. */
    public List<String> problems() {
        return List.of(problems);
    }
}
