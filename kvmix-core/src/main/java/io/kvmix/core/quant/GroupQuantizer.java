package io.kvmix.core.quant;

import java.lang.foreign.MemorySegment;

/**
 * Quantizes one packed matrix (one head of one block) from fp16 input into the bytes of FORMAT.md.
 * Implementations are bit-identical: {@link ScalarGroupQuantizer} is the reference,
 * {@link VectorGroupQuantizer} the fast path.
 */
public interface GroupQuantizer {

    /**
     * @param src        fp16 input; element (lane, pack) at byte {@code srcOffset + 2 * (lane * laneStride + pack * packStride)}
     * @param layout     geometry of the output matrix
     * @param dst        output; {@code layout.bytes()} bytes written at {@code dstOffset}
     * @param origin     names positions in error messages
     * @throws QuantizationException on non-finite input or a scale that overflows fp16; {@code dst} may then
     *                               hold partial output (callers write into storage they have not published yet)
     */
    void quantize(MemorySegment src, long srcOffset, int laneStride, int packStride, PackedLayout layout,
                  MemorySegment dst, long dstOffset, MatrixOrigin origin);

    /** The fastest implementation on this machine. */
    static GroupQuantizer fastest() {
        return VectorGroupQuantizer.INSTANCE;
    }
}
