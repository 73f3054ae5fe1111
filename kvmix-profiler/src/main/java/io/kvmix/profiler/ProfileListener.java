package io.kvmix.profiler;

/**
 * Progress of {@link ImportanceProfiler#profile}: called on the profiling thread, in order.
 */
public interface ProfileListener {
    /** A listener that ignores everything. */
    ProfileListener NONE = new ProfileListener() {
    };

    /** Before the first prompt. */
    default void started(int prompts, int layers) {
    }

    /** After prompt {@code gradients.index()} (0-based) had its forward and backward pass. */
    default void promptDone(PromptGradients gradients, int promptsDone, int prompts) {
    }
}
