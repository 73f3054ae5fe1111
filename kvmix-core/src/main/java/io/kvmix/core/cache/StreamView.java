package io.kvmix.core.cache;

import io.kvmix.core.quant.PackedLayout;

import java.lang.foreign.MemorySegment;
import java.util.List;

/**
 * Read-only picture of one stream (keys or values) of a layer for the attention kernels: which tokens
 * are full precision and where, which are packed and where. Every token of {@code [0, length)} is in
 * exactly one run, except tokens dropped because no query can see them any more.
 *
 * @param length   tokens in the sequence
 * @param kvHeads  H
 * @param headDim  D
 * @param layout   packed geometry of one head of a block (null when the stream has no packed blocks)
 * @param fpRuns   full-precision runs
 * @param packed   packed runs (parts of blocks)
 */
public record StreamView(int length, int kvHeads, int headDim, PackedLayout layout, List<FpRun> fpRuns,
                         List<PackedRun> packed) {

    /**
     * {@code count} full-precision token rows starting at sequence position {@code firstToken}, stored as
     * {@code precision} (fp16 unless the cache was made fp32). In {@code data} the rows of head h are
     * {@code [rowsPerHead][headDim]}; the run starts at row {@code firstRow}.
     */
    public record FpRun(int firstToken, int count, MemorySegment data, int rowsPerHead, int firstRow,
                        FpPrecision precision) {
        /** Byte offset of the row of {@code token} for head {@code head}. */
        public long rowOffset(int head, int token, int headDim) {
            return (long) precision.bytes() * (((long) head * rowsPerHead + firstRow + (token - firstToken)) * headDim);
        }
    }

    /**
     * Tokens {@code blockStart + from .. blockStart + to - 1} of a packed block: the matrix (FORMAT.md
     * section 3) of head h starts at byte {@code firstMatrix + h * headStride} of {@code data}.
     */
    public record PackedRun(int blockStart, int from, int to, MemorySegment data, long firstMatrix, long headStride) {
        /** Byte offset in {@link #data()} of the packed matrix of {@code head}. */
        public long matrixOffset(int head) {
            return firstMatrix + head * headStride;
        }
    }
}
