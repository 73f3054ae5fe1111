package io.kvmix.models.weights;

import io.kvmix.core.quant.Fp16;
import io.kvmix.models.config.DType;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Objects;

/**
 * One named tensor of a checkpoint: a read-only view of its bytes inside a memory-mapped
 * safetensors file, in the type they are stored in.
 *
 * <p>Nothing is copied to the heap when a checkpoint opens: a 7B fp16 model stays ~14 GB of page
 * cache rather than 28 GB of fp32 arrays. Dense kernels read {@link #data()} directly; {@link #get}
 * and {@link #rowTo} convert to fp32 where a few values are needed (an embedding row, a norm).
 * Elements are little-endian and row-major, as safetensors stores them; they need not be aligned.
 *
 * <p>A tensor is valid while the {@link SafetensorsFile} that mapped it is open; reading it
 * afterwards throws {@link IllegalStateException} (the mapping is gone), never reads freed memory.
 */
public final class Tensor {
    /** bf16 and fp16 elements are read as their raw 16 bits. */
    private static final ValueLayout.OfShort HALF = Fp16.LAYOUT;
    private static final ValueLayout.OfFloat FLOAT =
            ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final String name;
    private final DType dtype;
    private final long[] shape;
    private final long elementCount;
    private final MemorySegment data;
    private final Path sourceFile;

    /** {@code data} must hold exactly {@code product(shape) * dtype.bytes()} bytes. */
    Tensor(String name, DType dtype, long[] shape, MemorySegment data, Path sourceFile) {
        this.name = Objects.requireNonNull(name, "name");
        this.dtype = Objects.requireNonNull(dtype, "dtype");
        this.shape = shape.clone();
        this.sourceFile = Objects.requireNonNull(sourceFile, "sourceFile");
        this.elementCount = Arrays.stream(shape).reduce(1, Math::multiplyExact);
        if (data.byteSize() != elementCount * dtype.bytes()) {
            throw new IllegalArgumentException("tensor '" + name + "': " + data.byteSize() + " bytes for shape "
                    + Arrays.toString(shape) + " of " + dtype);
        }
        this.data = data.asReadOnly();
    }

    /** The name the checkpoint gives it, e.g. {@code model.layers.0.self_attn.q_proj.weight}. */
    public String name() {
        return name;
    }

    /** The stored element type; tensors of one checkpoint may differ. */
    public DType dtype() {
        return dtype;
    }

    /** The dimensions, outermost first (PyTorch {@code [out, in]} order for a linear weight); a copy. */
    public long[] shape() {
        return shape.clone();
    }

    /** Number of dimensions. */
    public int rank() {
        return shape.length;
    }

    /** Size of dimension {@code axis}. */
    public long dim(int axis) {
        return shape[Objects.checkIndex(axis, shape.length)];
    }

    /** Product of the dimensions (1 for a scalar). */
    public long elementCount() {
        return elementCount;
    }

    /**
     * The stored bytes: {@code elementCount() * dtype().bytes()} of them, little-endian, row-major,
     * read-only, a slice of the file mapping (no copy).
     */
    public MemorySegment data() {
        return data;
    }

    /** The safetensors file this tensor lives in, for error messages. */
    public Path sourceFile() {
        return sourceFile;
    }

    /**
     * Element {@code flatIndex} of the row-major data, converted to fp32 (exactly: fp16 and bf16
     * values are all representable in fp32).
     *
     * @throws IndexOutOfBoundsException if {@code flatIndex} is outside {@code [0, elementCount())}
     */
    public float get(long flatIndex) {
        Objects.checkIndex(flatIndex, elementCount);
        return switch (dtype) {
            case FLOAT16 -> Fp16.decode(data.get(HALF, flatIndex * Short.BYTES));
            case BFLOAT16 -> bfloat16ToFloat(data.get(HALF, flatIndex * Short.BYTES));
            case FLOAT32 -> data.get(FLOAT, flatIndex * Float.BYTES);
        };
    }

    /**
     * Converts row {@code row} of a 2-D tensor {@code [rows, cols]} to fp32 into
     * {@code dst[offset .. offset + cols)}; the embedding lookup of a token.
     *
     * @throws IllegalStateException     if the tensor is not 2-D
     * @throws IndexOutOfBoundsException if {@code row} is not a row or {@code dst} has no room
     */
    public void rowTo(long row, float[] dst, int offset) {
        if (shape.length != 2) {
            throw new IllegalStateException("tensor '" + name + "' has shape " + Arrays.toString(shape)
                    + "; rowTo needs a 2-D tensor");
        }
        long cols = shape[1];
        Objects.checkIndex(row, shape[0]);
        Objects.checkFromIndexSize(offset, cols, dst.length);
        convert(row * cols, dst, offset, (int) cols);
    }

    /**
     * All elements converted to fp32, in row-major order; meant for small tensors such as norm
     * weights, where a heap copy is cheaper than converting on every use.
     *
     * @throws IllegalStateException if the tensor has more elements than a Java array can hold
     */
    public float[] toFloatArray() {
        if (elementCount > Integer.MAX_VALUE - 8) {
            throw new IllegalStateException("tensor '" + name + "' has " + elementCount
                    + " elements, too many for one float[]");
        }
        float[] values = new float[(int) elementCount];
        convert(0, values, 0, values.length);
        return values;
    }

    /** Converts elements {@code [first, first + count)} into {@code dst[offset ..]}; bounds already checked. */
    private void convert(long first, float[] dst, int offset, int count) {
        switch (dtype) {
            case FLOAT32 -> MemorySegment.copy(data, FLOAT, first * Float.BYTES, dst, offset, count);
            case FLOAT16 -> {
                for (int i = 0; i < count; i++) {
                    dst[offset + i] = Fp16.decode(data.get(HALF, (first + i) * Short.BYTES));
                }
            }
            case BFLOAT16 -> {
                for (int i = 0; i < count; i++) {
                    dst[offset + i] = bfloat16ToFloat(data.get(HALF, (first + i) * Short.BYTES));
                }
            }
        }
    }

    /** bf16 is the upper half of an fp32, so widening is a shift. */
    static float bfloat16ToFloat(short bits) {
        return Float.intBitsToFloat((bits & 0xFFFF) << 16);
    }

    /** {@code name BF16 [4096, 4096]}. */
    @Override
    public String toString() {
        return name + " " + SafetensorsDType.code(dtype) + " " + Arrays.toString(shape);
    }
}
