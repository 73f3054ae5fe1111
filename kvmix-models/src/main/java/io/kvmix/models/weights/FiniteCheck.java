package io.kvmix.models.weights;

import io.kvmix.core.parallel.Parallel;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Finds NaN and infinity in weights when a model is loaded. The fp16 matmul path converts with an exact
 * bit trick that would turn them into large finite numbers, so a corrupt checkpoint must be caught here,
 * naming the file, the tensor and the element.
 */
public final class FiniteCheck {
    private static final VectorSpecies<Short> SHORTS = ShortVector.SPECIES_PREFERRED;
    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    /** Elements per parallel chunk. */
    private static final long CHUNK = 1 << 20;

    private FiniteCheck() {
    }

    /**
     * @throws CheckpointException naming the tensor and the first non-finite element found
     */
    public static void requireFinite(Tensor tensor) {
        long index = firstNonFinite(tensor);
        if (index >= 0) {
            throw new CheckpointException(tensor.sourceFile(), tensor.name(), "non-finite value " + tensor.get(index)
                    + " at element " + position(tensor.shape(), index));
        }
    }

    /** Flat index of a non-finite element (the lowest found), or -1. */
    static long firstNonFinite(Tensor tensor) {
        MemorySegment data = tensor.data();
        long count = tensor.elementCount();
        long chunks = (count + CHUNK - 1) / CHUNK;
        AtomicLong found = new AtomicLong(Long.MAX_VALUE);
        Parallel.forRange(Math.toIntExact(chunks), (from, to) -> {
            for (int c = from; c < to; c++) {
                long start = c * CHUNK;
                long hit = scan(tensor, data, start, Math.min(count, start + CHUNK));
                if (hit >= 0) {
                    found.accumulateAndGet(hit, Math::min);
                }
            }
        });
        return found.get() == Long.MAX_VALUE ? -1 : found.get();
    }

    /** First non-finite element in {@code [from, to)}, or -1: an all-ones exponent field. */
    private static long scan(Tensor tensor, MemorySegment data, long from, long to) {
        switch (tensor.dtype()) {
            case FLOAT16, BFLOAT16 -> {
                short exponent = (short) (tensor.dtype() == io.kvmix.models.config.DType.FLOAT16 ? 0x7C00 : 0x7F80);
                long i = from;
                for (; i + SHORTS.length() <= to; i += SHORTS.length()) {
                    ShortVector v = ShortVector.fromMemorySegment(SHORTS, data, 2 * i, ByteOrder.LITTLE_ENDIAN);
                    if (v.and(exponent).compare(VectorOperators.EQ, exponent).anyTrue()) {
                        return firstScalar(data, i, i + SHORTS.length(), exponent);
                    }
                }
                return firstScalar(data, i, to, exponent);
            }
            case FLOAT32 -> {
                for (long i = from; i < to; i++) {
                    if ((data.get(INT, 4 * i) & 0x7F80_0000) == 0x7F80_0000) {
                        return i;
                    }
                }
                return -1;
            }
        }
        throw new IllegalStateException("unknown dtype " + tensor.dtype());
    }

    private static long firstScalar(MemorySegment data, long from, long to, short exponent) {
        for (long i = from; i < to; i++) {
            if ((data.get(ValueLayout.JAVA_SHORT_UNALIGNED, 2 * i) & exponent) == exponent) {
                return i;
            }
        }
        return -1;
    }

    private static String position(long[] shape, long index) {
        long[] at = new long[shape.length];
        for (int axis = shape.length - 1; axis >= 0; axis--) {
            at[axis] = index % shape[axis];
            index /= shape[axis];
        }
        return Arrays.toString(at);
    }
}
