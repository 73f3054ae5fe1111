package io.kvmix.cuda.cache;

import io.kvmix.core.cache.KvBytes;
import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.cache.PackedPages;
import io.kvmix.core.plan.StreamQuant;
import io.kvmix.core.quant.Fp16;
import io.kvmix.core.quant.PackedLayout;
import io.kvmix.core.quant.ScalarGroupQuantizer;
import io.kvmix.cuda.CudaDevice;
import io.kvmix.cuda.DeviceBuffer;

import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One stream (keys or values) of one layer for a batch of sequences on the device, with the host-side
 * bookkeeping that decides where every token lives. The token order and the residual policy are those
 * of kvmix-core's {@code KvStream} (FORMAT.md section 4): sinks, packed blocks of G tokens, FP buffer
 * in chunks of G tokens; a chunk spilled by an append stays readable until the sequence's next append
 * (that step's queries see their own tokens in full precision). Packed blocks are paged like the CPU's
 * ({@link PackedPages#BLOCKS_PER_PAGE} blocks per page, layout {@code [head][block in page][matrix]}) and
 * pages are freed at the same moments, so the live byte counts are the CPU's.
 *
 * <p>Device memory: a pool of FP chunks {@code [heads][G][D]} fp16, a pool of pages, sink rows
 * {@code [batch][heads][S][D]} fp16, and two tables {@code [batch][tableStride]} of device addresses
 * (FP chunk j, head 0's matrix of block j) that the append kernel fills and the attention kernel reads.
 */
final class DeviceStream implements AutoCloseable {
    /** Bytes of one append job (struct AppendJob in quantize_pack.cu). */
    static final int JOB_BYTES = 48;
    /** Bytes of struct AppendParams in quantize_pack.cu. */
    private static final int APPEND_PARAMS_BYTES = 56;
    /** Ints of the append kernel's error record: flag, kind, sequence, head, token, channel, detail, unused. */
    static final int ERROR_INTS = 8;

    private final boolean keys;
    private final int heads;
    private final int headDim;
    private final int groupSize;
    private final int sinks;
    private final int window;
    private final int tableStride;
    private final StreamQuant quant;
    private final PackedLayout layout;
    private final DevicePool chunks;
    private final DevicePool pages;
    private final DeviceBuffer sinkRows;
    private final DeviceBuffer fpTable;
    private final DeviceBuffer blockTable;
    /** The append kernel's error record (8 ints), zero unless an append found bad input. */
    private final DeviceBuffer errors;
    /** struct AppendParams of quantize_pack.cu: what the append kernel needs beyond the jobs. */
    private final DeviceBuffer appendParams;
    private final Sequence[] sequences;

    /** Bookkeeping of one sequence (mirrors KvStream + PackedPages). */
    private static final class Sequence {
        int length;
        /** Position of the first token of the oldest chunk still in the FP buffer. */
        int fpStart;
        /** First position of the last append. */
        int stepStart;
        int blockCount;
        int liveBlocks;
        int releasedPages;
        BitSet written = new BitSet();
        /** FP chunk address of slot j (tokens S + j*G ..), 0 for none. */
        final long[] chunkAt;
        /** Page address of page p (blocks 16p ..), 0 for none. */
        final long[] pageAt;
        /** Chunks spilled by the last append, still read by its queries; returned to the pool at the next append. */
        List<Long> spilledChunks = new ArrayList<>();

        Sequence(int slots, int pages, int sinks) {
            chunkAt = new long[slots];
            pageAt = new long[pages];
            fpStart = sinks;
        }
    }

    DeviceStream(CudaDevice device, boolean keys, int layer, KvGeometry geometry, StreamQuant quant, int groupSize,
                 int sinks, int batch) {
        this.keys = keys;
        this.heads = geometry.kvHeads();
        this.headDim = geometry.headDim();
        this.groupSize = groupSize;
        this.sinks = sinks;
        this.window = geometry.slidingWindow();
        this.quant = quant;
        this.layout = keys ? PackedLayout.keys(quant.bits(), groupSize, headDim)
                : PackedLayout.values(quant.bits(), groupSize, headDim);
        this.tableStride = Math.max(1, (geometry.maxTokens() + groupSize - 1) / groupSize);
        String name = "layer " + layer + " " + streamName();
        this.chunks = new DevicePool(device, 2L * heads * groupSize * headDim, name + " FP chunks");
        this.pages = new DevicePool(device, (long) heads * PackedPages.BLOCKS_PER_PAGE * layout.bytes(),
                name + " packed pages");
        List<DeviceBuffer> allocated = new ArrayList<>();
        try {
            this.sinkRows = sinks > 0 ? keep(allocated, device.allocate(2L * batch * heads * sinks * headDim,
                    name + " sink rows")) : null;
            this.fpTable = keep(allocated, device.allocate(8L * batch * tableStride, name + " FP chunk table"));
            this.blockTable = keep(allocated, device.allocate(8L * batch * tableStride, name + " block table"));
            this.errors = keep(allocated, device.allocate(4L * ERROR_INTS, name + " append errors"));
            this.appendParams = keep(allocated, device.allocate(APPEND_PARAMS_BYTES, name + " append parameters"));
            errors.clear();
            ByteBuffer params = ByteBuffer.allocateDirect(APPEND_PARAMS_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            params.putLong(fpTable.address()).putLong(blockTable.address()).putLong(errors.address())
                    .putLong(headStride()).putInt(tableStride).putInt(geometry.rowWidth()).putInt(headDim)
                    .putInt(groupSize).putInt(bits()).putInt(keys ? 1 : 0);
            appendParams.upload(params, APPEND_PARAMS_BYTES, 0);
        } catch (RuntimeException e) {
            allocated.forEach(DeviceBuffer::close);
            chunks.close();
            pages.close();
            throw e;
        }
        int pageCount = (tableStride + PackedPages.BLOCKS_PER_PAGE - 1) / PackedPages.BLOCKS_PER_PAGE;
        this.sequences = new Sequence[batch];
        for (int s = 0; s < batch; s++) {
            sequences[s] = new Sequence(tableStride, pageCount, sinks);
        }
    }

    private static DeviceBuffer keep(List<DeviceBuffer> allocated, DeviceBuffer buffer) {
        allocated.add(buffer);
        return buffer;
    }

    String streamName() {
        return keys ? "keys" : "values";
    }

    PackedLayout layout() {
        return layout;
    }

    int bits() {
        return layout.bits().bits();
    }

    int tableStride() {
        return tableStride;
    }

    long appendParamsAddress() {
        return appendParams.address();
    }

    /** The append kernel's error record; all zero when the last appends found no bad input. */
    int[] errors() {
        int[] found = new int[ERROR_INTS];
        errors.download(found, ERROR_INTS);
        return found;
    }

    void clearErrors() {
        errors.clear();
    }

    long fpTableAddress() {
        return fpTable.address();
    }

    long blockTableAddress() {
        return blockTable.address();
    }

    /** Address of the sink rows, 0 without sinks. */
    long sinkRowsAddress() {
        return sinkRows == null ? 0 : sinkRows.address();
    }

    /** Bytes between the matrices of two heads of one block: a page's {@code [head][block in page][matrix]}. */
    long headStride() {
        return PackedPages.BLOCKS_PER_PAGE * layout.bytes();
    }

    int length(int sequence) {
        return sequences[sequence].length;
    }

    /** First token the attention reads in full precision after the sinks: packed blocks end there. */
    int packedEnd(int sequence) {
        Sequence q = sequences[sequence];
        return Math.min(sinks + q.blockCount * groupSize, Math.max(q.stepStart, sinks));
    }

    int fpBufferLength(int sequence) {
        Sequence q = sequences[sequence];
        return Math.max(0, q.length - q.fpStart);
    }

    /** Live bytes, counted as kvmix-core's KvStream counts them. */
    KvBytes bytes(int sequence) {
        Sequence q = sequences[sequence];
        long fpTokens = Math.min(q.length, sinks) + Math.max(0, q.length - q.fpStart);
        return new KvBytes((long) q.liveBlocks * heads * layout.codeBytes(), (long) q.liveBlocks * heads * layout.metaBytes(),
                fpTokens * heads * headDim * 2);
    }

    /**
     * Plans one append: updates the bookkeeping as if it succeeded and returns the kernel jobs; the caller
     * runs them and then calls {@link Append#commit()} or, when the kernel reports bad input,
     * {@link Append#rollBack()}.
     *
     * @param tokens   new tokens per sequence
     * @param firstRow input row of each sequence's first new token
     */
    Append plan(int[] tokens, int[] firstRow) {
        Append append = new Append();
        try {
            for (int s = 0; s < sequences.length; s++) {
                if (tokens[s] > 0) {
                    planSequence(append, s, tokens[s], firstRow[s]);
                }
            }
        } catch (RuntimeException e) {  // e.g. no device memory for a new chunk or page
            append.rollBack();
            throw e;
        }
        return append;
    }

    private void planSequence(Append append, int s, int tokens, int inputRow) {
        Sequence q = sequences[s];
        append.save(s, q);
        append.releasedChunks.addAll(q.spilledChunks);
        q.spilledChunks = new ArrayList<>();
        q.stepStart = q.length;
        Map<Integer, Job> jobs = new LinkedHashMap<>();
        int position = q.length;
        int end = q.length + tokens;
        if (position < sinks) {
            int to = Math.min(sinks, end);
            Job sink = new Job(sinkRows.address() + 2L * s * heads * sinks * headDim, sinks, s, -1, 0);
            sink.write(position, to, inputRow);
            append.jobs.add(sink);
            inputRow += to - position;
            position = to;
        }
        while (position < end) {
            int slot = (position - sinks) / groupSize;
            int row = (position - sinks) % groupSize;
            int to = Math.min(end, sinks + (slot + 1) * groupSize);
            if (q.chunkAt[slot] == 0) {
                long chunk = chunks.take();
                append.taken(chunks, chunk);
                append.setChunk(q, slot, chunk);
            }
            jobs.computeIfAbsent(slot, j -> chunkJob(q, s, j)).write(row, row + to - position, inputRow);
            inputRow += to - position;
            position = to;
        }
        q.length = end;
        int firstVisible = window > 0 ? q.stepStart - window + 1 : 0;
        int fpLength = q.length - q.fpStart;
        int spill = fpLength <= 0 ? 0 : quant.policy().tokensToQuantize(fpLength, groupSize) / groupSize;
        for (int c = 0; c < spill; c++) {
            int slot = (q.fpStart - sinks) / groupSize;
            boolean visible = q.fpStart + groupSize > firstVisible;
            if (visible) {
                int page = slot / PackedPages.BLOCKS_PER_PAGE;
                if (q.pageAt[page] == 0) {
                    long address = pages.take();
                    append.taken(pages, address);
                    append.setPage(q, page, address);
                }
                long block = q.pageAt[page] + (slot % PackedPages.BLOCKS_PER_PAGE) * layout.bytes();
                jobs.computeIfAbsent(slot, j -> chunkJob(q, s, j)).block = block;
                q.written.set(slot);
                q.liveBlocks++;
            }
            q.blockCount++;
            q.spilledChunks.add(q.chunkAt[slot]);
            q.fpStart += groupSize;
        }
        if (window > 0) {
            freeBefore(append, q, Math.max(0, (firstVisible - sinks) / groupSize));
        }
        append.jobs.addAll(jobs.values());
    }

    private Job chunkJob(Sequence q, int sequence, int slot) {
        return new Job(q.chunkAt[slot], groupSize, sequence, slot, sinks + slot * groupSize);
    }

    /** PackedPages.freeBefore: releases every page whose blocks all lie before {@code blockLimit}. */
    private void freeBefore(Append append, Sequence q, int blockLimit) {
        int limit = Math.min(blockLimit, q.blockCount) / PackedPages.BLOCKS_PER_PAGE;
        for (; q.releasedPages < limit; q.releasedPages++) {
            int first = q.releasedPages * PackedPages.BLOCKS_PER_PAGE;
            q.liveBlocks -= q.written.get(first, first + PackedPages.BLOCKS_PER_PAGE).cardinality();
            q.written.clear(first, first + PackedPages.BLOCKS_PER_PAGE);
            long page = q.pageAt[q.releasedPages];
            if (page != 0) {
                append.releasedPages.add(page);
                append.setPage(q, q.releasedPages, 0);
            }
        }
    }

    /** One kernel job: write new rows into an FP row matrix, then optionally quantize it into a block. */
    private static final class Job {
        final long rows;
        final int rowsPerHead;
        final int sequence;
        final int slot;
        final int firstToken;
        long block;
        int rowFrom;
        int rowTo;
        int inputRow;

        Job(long rows, int rowsPerHead, int sequence, int slot, int firstToken) {
            this.rows = rows;
            this.rowsPerHead = rowsPerHead;
            this.sequence = sequence;
            this.slot = slot;
            this.firstToken = firstToken;
        }

        void write(int from, int to, int fromInputRow) {
            rowFrom = from;
            rowTo = to;
            inputRow = fromInputRow;
        }

        void put(ByteBuffer out) {
            out.putLong(rows).putLong(block).putInt(rowsPerHead).putInt(rowFrom).putInt(rowTo).putInt(inputRow)
                    .putInt(sequence).putInt(slot).putInt(firstToken).putInt(0);
        }
    }

    /** The jobs of one planned append of this stream, with what it takes to undo it. */
    final class Append {
        private final List<Job> jobs = new ArrayList<>();
        private final List<Runnable> undo = new ArrayList<>();
        /** Chunks and pages returned to their pools when the append commits. */
        private final List<Long> releasedChunks = new ArrayList<>();
        private final List<Long> releasedPages = new ArrayList<>();

        int jobCount() {
            return jobs.size();
        }

        /** Chunks this append quantizes into blocks. */
        int spills() {
            return (int) jobs.stream().filter(job -> job.block != 0).count();
        }

        void writeJobs(ByteBuffer out) {
            jobs.forEach(job -> job.put(out));
        }

        private void save(int s, Sequence q) {
            int length = q.length;
            int fpStart = q.fpStart;
            int stepStart = q.stepStart;
            int blockCount = q.blockCount;
            int liveBlocks = q.liveBlocks;
            int releasedPages = q.releasedPages;
            BitSet written = (BitSet) q.written.clone();
            List<Long> spilled = q.spilledChunks;
            undo.add(() -> {
                q.length = length;
                q.fpStart = fpStart;
                q.stepStart = stepStart;
                q.blockCount = blockCount;
                q.liveBlocks = liveBlocks;
                q.releasedPages = releasedPages;
                q.written = written;
                q.spilledChunks = spilled;
            });
        }

        private void taken(DevicePool pool, long address) {
            undo.add(() -> pool.give(address));
        }

        private void setChunk(Sequence q, int slot, long address) {
            long old = q.chunkAt[slot];
            q.chunkAt[slot] = address;
            undo.add(() -> q.chunkAt[slot] = old);
        }

        private void setPage(Sequence q, int page, long address) {
            long old = q.pageAt[page];
            q.pageAt[page] = address;
            undo.add(() -> q.pageAt[page] = old);
        }

        /** The kernels ran without error: chunks and pages the append released go back to their pools. */
        void commit() {
            releasedChunks.forEach(chunks::give);
            releasedPages.forEach(pages::give);
            releasedChunks.clear();
            releasedPages.clear();
            undo.clear();
        }

        /** Restores the bookkeeping and the pools to their state before {@link #plan}. */
        void rollBack() {
            for (int i = undo.size() - 1; i >= 0; i--) {
                undo.get(i).run();
            }
            undo.clear();
            releasedChunks.clear();
            releasedPages.clear();
        }
    }

    /**
     * Tokens {@code fromToken .. length - 1} of a sequence decoded as stored, {@code [tokens][heads][D]}
     * (downloads the rows and blocks; for tests).
     */
    float[] stored(CudaDevice device, int sequence, int fromToken) {
        Sequence q = sequences[sequence];
        Map<Long, MemorySegment> downloaded = new HashMap<>();
        float[] out = new float[(q.length - fromToken) * heads * headDim];
        int i = 0;
        for (int t = fromToken; t < q.length; t++) {
            for (int h = 0; h < heads; h++) {
                if (t < sinks) {
                    MemorySegment rows = downloaded.computeIfAbsent(sinkRows.address() + 2L * sequence * heads * sinks * headDim,
                            a -> device.download(a, 2L * heads * sinks * headDim));
                    for (int c = 0; c < headDim; c++) {
                        out[i++] = Fp16.get(rows, 2L * (((long) h * sinks + t) * headDim + c));
                    }
                    continue;
                }
                int slot = (t - sinks) / groupSize;
                int inSlot = (t - sinks) % groupSize;
                if (t >= q.fpStart) {
                    MemorySegment chunk = downloaded.computeIfAbsent(q.chunkAt[slot], a -> device.download(a, chunks.slotBytes()));
                    for (int c = 0; c < headDim; c++) {
                        out[i++] = Fp16.get(chunk, 2L * (((long) h * groupSize + inSlot) * headDim + c));
                    }
                    continue;
                }
                long page = q.pageAt[slot / PackedPages.BLOCKS_PER_PAGE];
                if (page == 0 || !q.written.get(slot)) {
                    throw new IllegalStateException(streamName() + " of sequence " + sequence + ", token " + t
                            + ": the block was freed (outside the sliding window)");
                }
                MemorySegment pageData = downloaded.computeIfAbsent(page, a -> device.download(a, pages.slotBytes()));
                long matrix = ((long) h * PackedPages.BLOCKS_PER_PAGE + slot % PackedPages.BLOCKS_PER_PAGE) * layout.bytes();
                for (int c = 0; c < headDim; c++) {
                    out[i++] = keys ? ScalarGroupQuantizer.dequantize(pageData, matrix, layout, inSlot, c)
                            : ScalarGroupQuantizer.dequantize(pageData, matrix, layout, c, inSlot);
                }
            }
        }
        return out;
    }

    /** The packed matrix of {@code head} in block {@code block} of a sequence, as stored (FORMAT.md section 3). */
    MemorySegment packedMatrix(CudaDevice device, int sequence, int block, int head) {
        Sequence q = sequences[sequence];
        long page = q.pageAt[block / PackedPages.BLOCKS_PER_PAGE];
        if (block >= q.blockCount || page == 0 || !q.written.get(block)) {
            throw new IllegalArgumentException(streamName() + " of sequence " + sequence + ": block " + block
                    + " is not live (" + q.blockCount + " blocks)");
        }
        long matrix = ((long) head * PackedPages.BLOCKS_PER_PAGE + block % PackedPages.BLOCKS_PER_PAGE) * layout.bytes();
        return device.download(page + matrix, layout.bytes());
    }

    int blockCount(int sequence) {
        return sequences[sequence].blockCount;
    }

    /** Empties every sequence; chunks and pages go back to the pools for reuse. */
    void reset() {
        for (int s = 0; s < sequences.length; s++) {
            Sequence q = sequences[s];
            q.spilledChunks.forEach(chunks::give);
            for (int slot = (q.fpStart - sinks) / groupSize; slot < q.chunkAt.length && q.chunkAt[slot] != 0; slot++) {
                chunks.give(q.chunkAt[slot]);
            }
            for (long page : q.pageAt) {
                if (page != 0) {
                    pages.give(page);
                }
            }
            sequences[s] = new Sequence(q.chunkAt.length, q.pageAt.length, sinks);
        }
    }

    @Override
    public void close() {
        chunks.close();
        pages.close();
        if (sinkRows != null) {
            sinkRows.close();
        }
        fpTable.close();
        blockTable.close();
        errors.close();
        appendParams.close();
    }
}
