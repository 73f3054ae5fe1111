package io.kvmix.core.cache;

import io.kvmix.core.plan.StreamQuant;
import io.kvmix.core.quant.Fp16;
import io.kvmix.core.quant.GroupQuantizer;
import io.kvmix.core.quant.MatrixOrigin;
import io.kvmix.core.quant.PackedLayout;
import io.kvmix.core.quant.ScalarGroupQuantizer;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;

/**
 * One stream (keys or values) of one layer of one sequence, in token order (FORMAT.md section 4):
 * sinks (fp16, kept), packed blocks of G tokens, then the FP buffer as a queue of fp16 chunks of G
 * tokens aligned to group boundaries. Appending writes into the newest chunk; spilling quantizes the
 * oldest whole chunks into new blocks. Nothing already stored is ever copied, and chunk and block
 * memory is recycled through free lists, so an append is O(1) amortized.
 *
 * <p>A full-precision stream ({@code quant == null}) is the same queue without spilling.
 */
final class KvStream {
    private final boolean keys;
    private final int layer;
    private final int heads;
    private final int headDim;
    private final int chunkTokens;
    private final int sinks;
    private final int slidingWindow;
    private final StreamQuant quant;
    private final PackedLayout layout;
    private final GroupQuantizer quantizer;
    private final Arena arena;
    /** Storage of full-precision rows: fp16, or fp32 for an explicitly fp32 full-precision cache. */
    private final FpPrecision precision;

    /** [heads][sinks][headDim] in {@link #precision}; null without sinks. */
    private final MemorySegment sinkRows;
    /** FP chunks, oldest first, each [heads][chunkTokens][headDim] in {@link #precision}; chunk i starts at fpStart + i * chunkTokens. */
    private final ArrayDeque<MemorySegment> fpChunks = new ArrayDeque<>();
    /** Packed blocks in order, block j holds tokens sinks + j*G ..; null for a full-precision stream. */
    private final PackedPages blocks;
    /** Chunks spilled by the last append, still readable by that step's queries; recycled at the next append. */
    private final ArrayList<MemorySegment> spilledChunks = new ArrayList<>();
    private final ArrayList<Integer> spilledChunkStarts = new ArrayList<>();
    private final ArrayDeque<MemorySegment> freeChunks = new ArrayDeque<>();
    private final short[] rowScratch;

    private int length;
    /** Position of the first token of the oldest FP chunk. */
    private int fpStart;
    /** Sequence position of the last append's first token. */
    private int stepStart;

    KvStream(boolean keys, int layer, KvGeometry geometry, StreamQuant quant, int groupSize, int sinks,
             FpPrecision precision, GroupQuantizer quantizer, Arena arena) {
        if (quant != null && precision != FpPrecision.FP16) {
            throw new IllegalArgumentException("layer " + layer + ": a quantized cache keeps its FP buffer in fp16");
        }
        this.precision = precision;
        this.keys = keys;
        this.layer = layer;
        this.heads = geometry.kvHeads();
        this.headDim = geometry.headDim();
        this.slidingWindow = geometry.slidingWindow();
        this.chunkTokens = groupSize;
        this.sinks = sinks;
        this.quant = quant;
        this.quantizer = quantizer;
        this.arena = arena;
        this.layout = quant == null ? null
                : keys ? PackedLayout.keys(quant.bits(), groupSize, headDim)
                : PackedLayout.values(quant.bits(), groupSize, headDim);
        this.blocks = layout == null ? null : new PackedPages(heads, layout, arena);
        this.sinkRows = sinks > 0 ? arena.allocate((long) precision.bytes() * heads * sinks * headDim, 64) : null;
        this.rowScratch = new short[headDim];
        this.fpStart = sinks;
    }

    int length() {
        return length;
    }

    /** Appends {@code tokens} rows of {@code src} ([tokens][heads*headDim] fp32 from {@code offset}, already validated). */
    void write(float[] src, int offset, int tokens) {
        recycleSpilledChunks();
        stepStart = length;
        int rowWidth = heads * headDim;
        for (int t = 0; t < tokens; t++) {
            int position = length + t;
            MemorySegment target;
            int row;
            int rowsPerHead;
            if (position < sinks) {
                target = sinkRows;
                row = position;
                rowsPerHead = sinks;
            } else {
                int inQueue = position - fpStart;
                if (inQueue == fpChunks.size() * chunkTokens) {
                    fpChunks.addLast(newChunk());
                }
                target = fpChunks.peekLast();
                row = inQueue % chunkTokens;
                rowsPerHead = chunkTokens;
            }
            int srcRow = offset + t * rowWidth;
            for (int h = 0; h < heads; h++) {
                precision.put(src, srcRow + h * headDim, headDim, target,
                        (long) precision.bytes() * (((long) h * rowsPerHead + row) * headDim), rowScratch);
            }
        }
        length += tokens;
    }

    /**
     * Applies the residual policy after {@link #write} and frees what the sliding window hides. On a
     * quantization error the offending chunk stays in the FP buffer and the exception propagates.
     */
    void settle() {
        int firstVisible = slidingWindow > 0 ? stepStart - slidingWindow + 1 : 0;
        if (quant != null) {
            spill(firstVisible);
        } else {
            dropHiddenChunks(firstVisible);
        }
        freeHiddenBlocks(firstVisible);
    }

    /** Quantizes the oldest whole chunks the policy releases; chunks no query can see are dropped unquantized. */
    private void spill(int firstVisible) {
        int fpLength = length - fpStart;
        if (fpLength <= 0) {
            return;
        }
        int spillChunks = quant.policy().tokensToQuantize(fpLength, chunkTokens) / chunkTokens;
        for (int c = 0; c < spillChunks; c++) {
            MemorySegment chunk = fpChunks.peekFirst();
            int chunkStart = fpStart;
            boolean visible = chunkStart + chunkTokens > firstVisible;
            if (visible) {
                quantizeChunk(chunk, chunkStart, blocks.pageForNext(), blocks.blockCount());
            }
            blocks.commitNext(visible);
            fpChunks.pollFirst();
            spilledChunks.add(chunk);
            spilledChunkStarts.add(chunkStart);
            fpStart += chunkTokens;
        }
    }

    private void quantizeChunk(MemorySegment chunk, int chunkStart, MemorySegment page, int block) {
        for (int h = 0; h < heads; h++) {
            long src = 2L * h * chunkTokens * headDim;
            long dst = blocks.matrixOffset(block, h);
            if (keys) {
                // lane = token (stride D), pack = channel (stride 1)
                quantizer.quantize(chunk, src, headDim, 1, layout, page, dst, MatrixOrigin.keys(layer, h, chunkStart));
            } else {
                // lane = channel (stride 1), pack = token (stride D)
                quantizer.quantize(chunk, src, 1, headDim, layout, page, dst, MatrixOrigin.values(layer, h, chunkStart));
            }
        }
    }

    private void dropHiddenChunks(int firstVisible) {
        while (fpChunks.size() > 1 && fpStart + chunkTokens <= firstVisible) {
            freeChunks.addLast(fpChunks.pollFirst());
            fpStart += chunkTokens;
        }
    }

    private void freeHiddenBlocks(int firstVisible) {
        if (slidingWindow > 0 && blocks != null) {
            blocks.freeBefore(Math.max(0, (firstVisible - sinks) / chunkTokens));
        }
    }

    private void recycleSpilledChunks() {
        freeChunks.addAll(spilledChunks);
        spilledChunks.clear();
        spilledChunkStarts.clear();
    }

    private MemorySegment newChunk() {
        MemorySegment chunk = freeChunks.pollFirst();
        return chunk != null ? chunk : arena.allocate((long) precision.bytes() * heads * chunkTokens * headDim, 64);
    }

    /** Live bytes: packed codes, metadata, and fp16 rows of sinks and FP chunks. */
    KvBytes bytes() {
        long fpTokens = Math.min(length, sinks) + Math.max(0, length - fpStart);
        long fp = fpTokens * heads * headDim * precision.bytes();
        if (layout == null) {
            return new KvBytes(0, 0, fp);
        }
        long live = blocks.liveBlocks();
        return new KvBytes(live * heads * layout.codeBytes(), live * heads * layout.metaBytes(), fp);
    }

    /** Tokens currently in the FP buffer (sinks excluded). */
    int fpBufferLength() {
        return Math.max(0, length - fpStart);
    }

    int packedBlocks() {
        return blocks == null ? 0 : blocks.blockCount();
    }

    /**
     * The stream as the last step's queries see it: history as stored, the last append's own tokens in
     * full precision (FORMAT.md section 4; DESIGN: prefill attends over its own FP keys/values).
     */
    StreamView view() {
        List<StreamView.FpRun> fp = new ArrayList<>();
        List<StreamView.PackedRun> packed = new ArrayList<>();
        if (sinks > 0 && length > 0) {
            fp.add(new StreamView.FpRun(0, Math.min(sinks, length), sinkRows, sinks, 0, precision));
        }
        for (int j = 0; j < packedBlocks(); j++) {
            MemorySegment page = blocks.liveBlock(j);
            int start = sinks + j * chunkTokens;
            int to = Math.min(chunkTokens, stepStart - start);
            if (page != null && to > 0) {
                packed.add(new StreamView.PackedRun(start, 0, to, page, blocks.matrixOffset(j, 0),
                        blocks.matrixOffset(j, 1) - blocks.matrixOffset(j, 0)));
            }
        }
        for (int i = 0; i < spilledChunks.size(); i++) {
            int start = spilledChunkStarts.get(i);
            int from = Math.max(start, stepStart);
            if (from < start + chunkTokens) {
                fp.add(new StreamView.FpRun(from, start + chunkTokens - from, spilledChunks.get(i), chunkTokens,
                        from - start, precision));
            }
        }
        int start = fpStart;
        for (MemorySegment chunk : fpChunks) {
            int count = Math.min(chunkTokens, length - start);
            if (count > 0) {
                fp.add(new StreamView.FpRun(start, count, chunk, chunkTokens, 0, precision));
            }
            start += chunkTokens;
        }
        return new StreamView(length, heads, headDim, layout, fp, packed);
    }

    /** Decoded value of (token, head, channel) as stored; for tests and debugging, not for attention. */
    float storedValue(int token, int head, int channel) {
        if (token < sinks) {
            return precision.get(sinkRows, (long) precision.bytes() * (((long) head * sinks + token) * headDim + channel));
        }
        if (token >= fpStart) {
            int i = (token - fpStart) / chunkTokens;
            MemorySegment chunk = fpChunks.stream().skip(i).findFirst().orElseThrow();
            int row = (token - fpStart) % chunkTokens;
            return precision.get(chunk, (long) precision.bytes() * (((long) head * chunkTokens + row) * headDim + channel));
        }
        int j = (token - sinks) / chunkTokens;
        MemorySegment page = blocks.liveBlock(j);
        if (page == null) {
            throw new IllegalStateException("token " + token + " was freed (outside the sliding window)");
        }
        int row = (token - sinks) % chunkTokens;
        long base = blocks.matrixOffset(j, head);
        return keys ? ScalarGroupQuantizer.dequantize(page, base, layout, row, channel)
                : ScalarGroupQuantizer.dequantize(page, base, layout, channel, row);
    }
}
