package io.kvmix.core.cache;

/**
 * Exact live bytes of a cache (FORMAT.md section 4.1): packed codes, fp16 scales and mins, and fp16
 * full-precision tokens (sinks + FP buffer). No allocator slack, headers or padding.
 */
public record KvBytes(long codes, long metadata, long fullPrecision) {
    public static final KvBytes ZERO = new KvBytes(0, 0, 0);

    public long total() {
        return codes + metadata + fullPrecision;
    }

    public KvBytes plus(KvBytes other) {
        return new KvBytes(codes + other.codes, metadata + other.metadata, fullPrecision + other.fullPrecision);
    }
}
