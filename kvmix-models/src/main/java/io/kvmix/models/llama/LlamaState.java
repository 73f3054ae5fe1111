package io.kvmix.models.llama;

import io.kvmix.core.cache.SequenceKvCache;

/** Per-sequence state: the KV cache of every layer and the position of the next token. */
public final class LlamaState implements AutoCloseable {
    private final SequenceKvCache cache;
    private int position;

    LlamaState(SequenceKvCache cache) {
        this.cache = cache;
    }

    public SequenceKvCache cache() {
        return cache;
    }

    /** Tokens processed so far (the position of the next token). */
    public int position() {
        return position;
    }

    void advance(int tokens) {
        position += tokens;
    }

    @Override
    public void close() {
        cache.close();
    }
}
