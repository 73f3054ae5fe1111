package io.kvmix.cuda.cache;

import io.kvmix.core.cache.KvBytes;
import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.quant.MatrixOrigin;
import io.kvmix.core.quant.QuantizationException;
import io.kvmix.cuda.CudaDevice;
import io.kvmix.cuda.DeviceBuffer;

import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.IntUnaryOperator;

/**
 * {@link BatchKvCache} in GPU memory: two {@link DeviceStream}s, the append kernel of
 * {@code quantize_pack.cu} and the split-K decode attention of {@code fused_attention.cu}. Codes and
 * metadata are bit-identical to kvmix-core's quantizer; byte accounting equals the CPU cache's.
 * All device memory is owned by this object and freed by {@link #close()}.
 *
 * <p>An append is O(new tokens): the host plans jobs (which FP chunk rows to write, which chunks the
 * residual policy spills into which block) and uploads them with the per-sequence state in one copy;
 * one kernel per stream writes and quantizes. On bad input (a value not finite in fp16, a group scale
 * overflowing fp16) the whole append is undone and an exception names the position.
 */
public final class DeviceBatchKvCache implements BatchKvCache {
    private static final String QUANTIZE_MODULE = "quantize_pack";
    private static final String ATTENTION_MODULE = "fused_attention";
    private static final int THREADS = 128;
    /** Tokens per attention work unit (one warp lane per token, one run of a packed matrix). */
    private static final int UNIT = 32;
    /** Split lengths the attention may choose, in units; and a CTA's fixed work in units (see chooseSplitUnits). */
    private static final int MIN_SPLIT_UNITS = 4;
    private static final int MAX_SPLIT_UNITS = 64;
    private static final int FIXED_CTA_UNITS = 6;
    private static final int ATTENTION_WARPS = THREADS / 32;
    /** Head dimensions the attention kernels are built for. */
    public static final Set<Integer> HEAD_DIMS = Set.of(64, 128);
    /**
     * Query heads per KV head that one attention CTA serves (kernel kvmix_attend_d&lt;D&gt;_g&lt;n&gt;); any other group
     * runs on the smallest of these that holds it (3 on 4, 6 on 8: the extra heads are zero queries whose outputs
     * are dropped) or, above 8, in tiles of 8 (16 = two CTAs per KV head, each reading the cache).
     */
    static final int[] KERNEL_GROUPS = {1, 2, 4, 8};
    /** Bytes of struct CacheParams in fused_attention.cu: two StreamTables of 40 bytes and six ints. */
    private static final int ATTENTION_PARAMS_BYTES = 104;
    /** Error kinds of the append kernel (quantize_pack.cu); the other kind is a scale overflow. */
    private static final int ERROR_NON_FINITE = 1;

    private final CudaDevice device;
    private final KvGeometry geometry;
    private final int layer;
    private final LayerQuant quant;
    private final int groupSize;
    private final int batch;
    private final DeviceStream keys;
    private final DeviceStream values;
    /** struct CacheParams of fused_attention.cu: tables and shape, written once. */
    private final DeviceBuffer attentionParams;
    /** [batch][3] per-sequence state for the attention, then the append jobs. */
    private final GrowableBuffer control;
    /** fp32 rows or queries uploaded from the host. */
    private final GrowableBuffer staging;
    private final GrowableBuffer partialAcc;
    private final GrowableBuffer partialStats;
    private final GrowableBuffer output;
    /** Occupancy calculator answers by kernel and shared memory size (asked once each). */
    private final Map<String, Integer> residentCtas = new HashMap<>();
    /** The last split choice of {@link #splitUnits} and what it was made for (units after the sinks, query group). */
    private int chosenSplitUnits;
    private int chosenForUnits = -1;
    private int chosenForGroup = -1;
    private boolean open = true;

    /** True when the kernels are built for this geometry (head dim 64 or 128, G a multiple of 32). */
    public static boolean supports(KvGeometry geometry, int groupSize) {
        return HEAD_DIMS.contains(geometry.headDim()) && groupSize > 0 && groupSize % 32 == 0;
    }

    public DeviceBatchKvCache(CudaDevice device, KvGeometry geometry, int layer, LayerQuant quant, int groupSize,
                              int batch) {
        if (!supports(geometry, groupSize)) {
            throw new IllegalArgumentException("layer " + layer + ": the GPU cache supports head_dim " + HEAD_DIMS
                    + " and group sizes that are multiples of 32; got head_dim " + geometry.headDim()
                    + ", group_size " + groupSize);
        }
        if (geometry.headDim() % Math.min(groupSize, geometry.headDim()) != 0) {
            throw new IllegalArgumentException("layer " + layer + ": value group " + groupSize
                    + " does not divide head_dim " + geometry.headDim());
        }
        if (batch <= 0) {
            throw new IllegalArgumentException("layer " + layer + ": batch=" + batch);
        }
        this.device = device;
        this.geometry = geometry;
        this.layer = layer;
        this.quant = quant;
        this.groupSize = groupSize;
        this.batch = batch;
        DeviceStream k = null;
        DeviceStream v = null;
        try {
            k = new DeviceStream(device, true, layer, geometry, quant.keys(), groupSize, quant.sinks(), batch);
            v = new DeviceStream(device, false, layer, geometry, quant.values(), groupSize, quant.sinks(), batch);
            this.attentionParams = device.allocate(ATTENTION_PARAMS_BYTES, "layer " + layer + " attention parameters");
        } catch (RuntimeException e) {
            if (k != null) {
                k.close();
            }
            if (v != null) {
                v.close();
            }
            throw e;
        }
        this.keys = k;
        this.values = v;
        ByteBuffer params = ByteBuffer.allocateDirect(ATTENTION_PARAMS_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        for (DeviceStream stream : List.of(keys, values)) {
            params.putLong(stream.blockTableAddress()).putLong(stream.fpTableAddress()).putLong(stream.sinkRowsAddress())
                    .putLong(stream.headStride()).putInt(stream.bits()).putInt(0);
        }
        params.putInt(geometry.kvHeads()).putInt(groupSize).putInt(quant.sinks()).putInt(geometry.slidingWindow())
                .putInt(keys.tableStride()).putInt(0);
        attentionParams.upload(params, ATTENTION_PARAMS_BYTES, 0);
        String name = "layer " + layer;
        this.control = new GrowableBuffer(name + " append jobs");
        this.staging = new GrowableBuffer(name + " host rows");
        this.partialAcc = new GrowableBuffer(name + " attention partial sums");
        this.partialStats = new GrowableBuffer(name + " attention partial max/sum");
        this.output = new GrowableBuffer(name + " attention output");
        control.ensure(stateBytes());
        uploadState(ByteBuffer.allocateDirect(stateBytes()).order(ByteOrder.LITTLE_ENDIAN));
    }

    public CudaDevice device() {
        return device;
    }

    @Override
    public int batch() {
        return batch;
    }

    @Override
    public KvGeometry geometry() {
        return geometry;
    }

    @Override
    public int layer() {
        return layer;
    }

    @Override
    public LayerQuant quant() {
        return quant;
    }

    @Override
    public int groupSize() {
        return groupSize;
    }

    @Override
    public boolean onDevice() {
        return true;
    }

    @Override
    public int length(int sequence) {
        return keys.length(sequence);
    }

    @Override
    public void append(float[] keyRows, float[] valueRows, int[] tokens) {
        int rows = BatchRows.check(this, keyRows, valueRows, tokens);
        if (rows == 0) {
            return;
        }
        int floats = rows * geometry.rowWidth();
        DeviceBuffer buffer = staging.ensure(8L * floats);
        ByteBuffer host = ByteBuffer.allocateDirect(8 * floats).order(ByteOrder.LITTLE_ENDIAN);
        host.asFloatBuffer().put(keyRows).put(valueRows);
        buffer.upload(host, 8L * floats, 0);
        PreparedAppend append = prepareAppend(tokens);
        append.launch(buffer.address(), buffer.address() + 4L * floats, false);
        append.finish();
    }

    /**
     * Appends rows that are already on the device: {@code keyRows} and {@code valueRows} hold
     * {@code [sum of tokens][kvHeads * headDim]} fp16 ({@code half}) or fp32.
     */
    public void appendDevice(DeviceBuffer keyRows, DeviceBuffer valueRows, boolean half, int[] tokens) {
        PreparedAppend append = prepareAppend(tokens);
        append.launch(keyRows.address(), valueRows.address(), half);
        append.finish();
    }

    /**
     * Plans an append and uploads its jobs; {@link PreparedAppend#launch} then enqueues the kernels and
     * {@link PreparedAppend#finish} checks them. (Split in three so a benchmark can time the kernels alone.)
     */
    public PreparedAppend prepareAppend(int[] tokens) {
        checkOpen();
        if (tokens.length != batch) {
            throw new IllegalArgumentException("layer " + layer + " append: " + tokens.length
                    + " token counts for a batch of " + batch);
        }
        int[] firstRow = new int[batch];
        int rows = 0;
        for (int s = 0; s < batch; s++) {
            if (tokens[s] < 0 || length(s) + (long) tokens[s] > geometry.maxTokens()) {
                throw new IllegalStateException("layer " + layer + " append: sequence " + s + ": appending "
                        + tokens[s] + " tokens to " + length(s) + " exceeds the cache capacity of "
                        + geometry.maxTokens() + " tokens");
            }
            firstRow[s] = rows;
            rows += tokens[s];
        }
        DeviceStream.Append keyJobs = keys.plan(tokens, firstRow);
        DeviceStream.Append valueJobs;
        try {
            valueJobs = values.plan(tokens, firstRow);
        } catch (RuntimeException e) {
            keyJobs.rollBack();
            throw e;
        }
        int bytes = stateBytes() + DeviceStream.JOB_BYTES * (keyJobs.jobCount() + valueJobs.jobCount());
        ByteBuffer host = ByteBuffer.allocateDirect(bytes).order(ByteOrder.LITTLE_ENDIAN);
        host.position(stateBytes());
        keyJobs.writeJobs(host);
        valueJobs.writeJobs(host);
        try {
            control.ensure(bytes);
            uploadState(host);
        } catch (RuntimeException e) {
            keyJobs.rollBack();
            valueJobs.rollBack();
            throw e;
        }
        return new PreparedAppend(keyJobs, valueJobs);
    }

    /** [batch][3] ints (length, keys' packedEnd, values' packedEnd), padded to 16 bytes. */
    private int stateBytes() {
        return (batch * 3 * 4 + 15) / 16 * 16;
    }

    private void uploadState(ByteBuffer host) {
        for (int s = 0; s < batch; s++) {
            host.putInt(12 * s, length(s)).putInt(12 * s + 4, keys.packedEnd(s)).putInt(12 * s + 8, values.packedEnd(s));
        }
        control.buffer().upload(host, host.capacity(), 0);
    }

    /** An append whose jobs are on the device. */
    public final class PreparedAppend {
        private final DeviceStream.Append keyJobs;
        private final DeviceStream.Append valueJobs;
        private boolean launched;

        private PreparedAppend(DeviceStream.Append keyJobs, DeviceStream.Append valueJobs) {
            this.keyJobs = keyJobs;
            this.valueJobs = valueJobs;
        }

        /** Groups of G tokens (keys and values, all sequences) this append quantizes. */
        public int quantizedGroups() {
            return keyJobs.spills() + valueJobs.spills();
        }

        /** Enqueues the append kernels reading rows at device addresses {@code keyRows}, {@code valueRows}. */
        public void launch(long keyRows, long valueRows, boolean half) {
            long jobs = control.buffer().address() + stateBytes();
            launchStream(keys, keyJobs, jobs, keyRows, half);
            launchStream(values, valueJobs, jobs + (long) DeviceStream.JOB_BYTES * keyJobs.jobCount(), valueRows, half);
            launched = true;
        }

        /**
         * Waits for the kernels and commits the append, or undoes it and throws when a kernel found bad input.
         *
         * @throws QuantizationException naming layer, stream, sequence, head, token and channel
         */
        public void finish() {
            if (!launched) {
                throw new IllegalStateException("layer " + layer + ": append finished before it was launched");
            }
            int[] keyErrors = keys.errors();
            int[] valueErrors = values.errors();
            if (keyErrors[0] == 0 && valueErrors[0] == 0) {
                keyJobs.commit();
                valueJobs.commit();
                return;
            }
            keyJobs.rollBack();
            valueJobs.rollBack();
            keys.clearErrors();
            values.clearErrors();
            uploadState(ByteBuffer.allocateDirect(stateBytes()).order(ByteOrder.LITTLE_ENDIAN));
            boolean inKeys = keyErrors[0] != 0;
            throw describe(inKeys, inKeys ? keyErrors : valueErrors);
        }
    }

    private void launchStream(DeviceStream stream, DeviceStream.Append jobs, long jobsAddress, long rows, boolean half) {
        if (jobs.jobCount() == 0) {
            return;
        }
        // fp16 tile [G][D + padding], then scales, mins and 1 / scales as fp32 (quantize_pack.cu exports the padding;
        // CudaDevice.moduleInt reads it from the module once)
        int padding = device.moduleInt(QUANTIZE_MODULE, "kvmix_append_tile_row_padding");
        int tileFloats = (groupSize * (geometry.headDim() + padding) + 1) / 2;
        int metaCount = stream.layout().metaCount();
        int sharedBytes = 4 * (tileFloats + 3 * metaCount);
        device.launch(device.kernel(QUANTIZE_MODULE, "kvmix_append_stream_d" + geometry.headDim()),
                new int[] {jobs.jobCount(), geometry.kvHeads(), 1}, THREADS, sharedBytes,
                new long[] {jobsAddress}, new long[] {rows}, new int[] {half ? 1 : 0},
                new long[] {stream.appendParamsAddress()});
    }

    /** The exception for an error record of the append kernel (layout: DeviceStream.ERROR_INTS). */
    private QuantizationException describe(boolean inKeys, int[] record) {
        DeviceStream stream = inKeys ? keys : values;
        int kind = record[1];
        int sequence = record[2];
        int head = record[3];
        if (kind == ERROR_NON_FINITE) {
            return new QuantizationException("layer " + layer + " " + stream.streamName() + ", sequence " + sequence
                    + ", kv-head " + head + ", token " + record[4] + ", channel " + record[5] + ": value "
                    + Float.intBitsToFloat(record[6]) + " is not finite in fp16 (|x| must be < 65520)");
        }
        // scale overflow: first token of the block, first lane of the group, pack index
        MatrixOrigin origin = inKeys ? MatrixOrigin.keys(layer, head, record[4]) : MatrixOrigin.values(layer, head, record[4]);
        return new QuantizationException("sequence " + sequence + ", "
                + origin.describeGroup(record[5], stream.layout().groupLength(), record[6])
                + ": the group's range needs a scale that overflows fp16 at " + stream.bits() + " bits");
    }

    @Override
    public void attend(float[] queries, int queryHeads, float scale, float[] out) {
        BatchRows.checkQueries(this, queries, queryHeads, out);
        DeviceBuffer q = staging.ensure(4L * queries.length);
        q.upload(queries, queries.length);
        DeviceBuffer o = output.ensure(4L * out.length);
        attendDevice(q, false, queryHeads, scale, o, false);
        o.download(out, out.length);
    }

    /**
     * Decode attention on device buffers: {@code queries} and {@code out} are {@code [batch][queryHeads][headDim]},
     * fp16 when the flag says so, else fp32. Enqueued on the device's stream (not waited for).
     */
    public void attendDevice(DeviceBuffer queries, boolean queriesHalf, int queryHeads, float scale, DeviceBuffer out,
                             boolean outHalf) {
        attendDevice(queries, queriesHalf, queryHeads, scale, out, outHalf, splitUnits(queryHeads));
    }

    /** As above with an explicit split length of {@code splitUnits * 32} tokens (for tuning). */
    public void attendDevice(DeviceBuffer queries, boolean queriesHalf, int queryHeads, float scale, DeviceBuffer out,
                             boolean outHalf, int splitUnits) {
        checkOpen();
        int kvHeads = geometry.kvHeads();
        int d = geometry.headDim();
        int group = queryGroup(queryHeads);
        int kernelGroup = kernelGroup(group);
        long rowBytes = (long) batch * queryHeads * d * (queriesHalf ? 2 : 4);
        long outBytes = (long) batch * queryHeads * d * (outHalf ? 2 : 4);
        if (queries.bytes() < rowBytes || out.bytes() < outBytes) {
            throw new IllegalArgumentException("layer " + layer + " attention: queries need " + rowBytes
                    + " bytes (have " + queries.bytes() + "), out needs " + outBytes + " (have " + out.bytes() + ")");
        }
        for (int s = 0; s < batch; s++) {
            if (length(s) == 0) {
                throw new IllegalStateException("layer " + layer + " attention: sequence " + s + " is empty");
            }
        }
        int splits = Math.max(1, ceilDiv(regularUnits(), splitUnits));
        long partials = (long) batch * queryHeads * splits;
        DeviceBuffer acc = partialAcc.ensure(4L * partials * d);
        DeviceBuffer stats = partialStats.ensure(8L * partials);
        device.launch(device.kernel(ATTENTION_MODULE, attentionKernel(kernelGroup)),
                new int[] {splits, kvHeads * headTiles(group), batch}, THREADS,
                attentionSharedBytes(kernelGroup, splitUnits),
                new long[] {attentionParams.address()}, new long[] {control.buffer().address()},
                new long[] {queries.address()}, new int[] {queriesHalf ? 1 : 0}, new int[] {group},
                new float[] {scale}, new int[] {splitUnits}, new long[] {acc.address()}, new long[] {stats.address()});
        device.launch(device.kernel(ATTENTION_MODULE, "kvmix_attend_combine"), new int[] {batch * queryHeads, 1, 1}, d, 0,
                new long[] {acc.address()}, new long[] {stats.address()}, new int[] {splits}, new int[] {d},
                new long[] {out.address()}, new int[] {outHalf ? 1 : 0});
    }

    /** Units of 32 tokens after the sinks in the longest sequence. */
    private int regularUnits() {
        int longest = 0;
        for (int s = 0; s < batch; s++) {
            longest = Math.max(longest, length(s));
        }
        return Math.max(1, ceilDiv(longest - quant.sinks(), UNIT));
    }

    /** Split length (in units of 32 tokens) that {@link #attendDevice} uses for {@code queryHeads} query heads. */
    public int splitUnits(int queryHeads) {
        int group = queryGroup(queryHeads);
        int kernelGroup = kernelGroup(group);
        int units = regularUnits();
        // the choice changes only when the longest sequence crosses a unit boundary: keep the last one
        if (units != chosenForUnits || group != chosenForGroup) {
            chosenSplitUnits = chooseSplitUnits(units, batch * geometry.kvHeads() * headTiles(group),
                    device.multiprocessors(), perCta -> residentCtas(kernelGroup, perCta));
            chosenForUnits = units;
            chosenForGroup = group;
        }
        return chosenSplitUnits;
    }

    /**
     * Picks the split length that minimises the modelled time {@code waves x (units per CTA + fixed)}: a CTA's
     * time grows with its units plus a fixed part (query load, source lookups, softmax, partial write; about
     * {@value #FIXED_CTA_UNITS} units' worth on the H200), and CTAs run in waves of (multiprocessors x resident
     * CTAs per multiprocessor). Long splits amortise the fixed part; the wave count penalises a last wave
     * that leaves most of the GPU idle.
     *
     * @param units             units of 32 tokens after the sinks in the longest sequence
     * @param pairs             CTAs per split: batch x KV heads x query-head tiles
     * @param residentCtas      CTAs one multiprocessor holds at a split length (from the occupancy calculator)
     */
    static int chooseSplitUnits(int units, int pairs, int multiprocessors, IntUnaryOperator residentCtas) {
        int best = MIN_SPLIT_UNITS;
        long bestCost = Long.MAX_VALUE;
        for (int splitUnits = MIN_SPLIT_UNITS; splitUnits <= MAX_SPLIT_UNITS; splitUnits++) {
            int splits = ceilDiv(units, splitUnits);
            int perCta = ceilDiv(units, splits);
            long ctas = (long) pairs * splits;
            int resident = residentCtas.applyAsInt(perCta);
            if (resident == 0) {  // the CTA's shared memory does not fit
                break;
            }
            long capacity = (long) multiprocessors * resident;
            long cost = ((ctas + capacity - 1) / capacity) * (perCta + FIXED_CTA_UNITS);
            if (cost < bestCost) {
                bestCost = cost;
                best = perCta;
            }
            if (splits == 1) {
                break;
            }
        }
        return best;
    }

    /** Query heads per KV head, checked. */
    private int queryGroup(int queryHeads) {
        if (queryHeads <= 0 || queryHeads % geometry.kvHeads() != 0) {
            throw new IllegalArgumentException("layer " + layer + " attention: " + queryHeads
                    + " query heads is not a positive multiple of the " + geometry.kvHeads() + " KV heads");
        }
        return queryHeads / geometry.kvHeads();
    }

    /** The kernel's query heads per CTA for a group (see {@link #KERNEL_GROUPS}). */
    static int kernelGroup(int group) {
        for (int kernelGroup : KERNEL_GROUPS) {
            if (kernelGroup >= group) {
                return kernelGroup;
            }
        }
        return KERNEL_GROUPS[KERNEL_GROUPS.length - 1];
    }

    /** CTAs per (split, KV head, sequence): the group's tiles of {@link #kernelGroup} query heads. */
    private static int headTiles(int group) {
        return ceilDiv(group, kernelGroup(group));
    }

    private int residentCtas(int kernelGroup, int splitUnits) {
        int sharedBytes = attentionSharedBytes(kernelGroup, splitUnits);
        return residentCtas.computeIfAbsent(attentionKernel(kernelGroup) + "/" + sharedBytes,
                key -> device.residentCtas(device.kernel(ATTENTION_MODULE, attentionKernel(kernelGroup)), THREADS, sharedBytes));
    }

    /**
     * Dynamic shared memory of one attention CTA, as fused_attention.cu lays it out and exports the sizes: the
     * right-hand sides of the fp16 key rows (the queries, once per CTA), then per unit its sources (four addresses,
     * the unit's offset in its block and what to do with it) and fp32 scores per query head, then per warp the
     * stages that the packed slices of its units are copied into.
     */
    private int attentionSharedBytes(int kernelGroup, int splitUnits) {
        // sizes exported by fused_attention.cu, read from the module once (CudaDevice.moduleInt)
        int sourceBytes = device.moduleInt(ATTENTION_MODULE, "kvmix_attend_unit_source_bytes");
        int stageBytesPerChannel = device.moduleInt(ATTENTION_MODULE, "kvmix_attend_stage_bytes_per_channel");
        int fpKeyRowBytesPerChannel = device.moduleInt(ATTENTION_MODULE, "kvmix_attend_fp_key_rows_bytes_per_channel");
        return (ceilDiv(quant.sinks(), UNIT) + splitUnits) * (sourceBytes + 4 * kernelGroup * UNIT)
                + (ATTENTION_WARPS * stageBytesPerChannel + fpKeyRowBytesPerChannel) * geometry.headDim();
    }

    private String attentionKernel(int kernelGroup) {
        return "kvmix_attend_d" + geometry.headDim() + "_g" + kernelGroup;
    }

    private static int ceilDiv(int a, int b) {
        return (a + b - 1) / b;
    }

    @Override
    public KvBytes keyBytes(int sequence) {
        return keys.bytes(sequence);
    }

    @Override
    public KvBytes valueBytes(int sequence) {
        return values.bytes(sequence);
    }

    @Override
    public int keyFpLength(int sequence) {
        return keys.fpBufferLength(sequence);
    }

    @Override
    public int valueFpLength(int sequence) {
        return values.fpBufferLength(sequence);
    }

    @Override
    public float[] storedKeys(int sequence, int fromToken) {
        return keys.stored(device, sequence, fromToken);
    }

    @Override
    public float[] storedValues(int sequence, int fromToken) {
        return values.stored(device, sequence, fromToken);
    }

    /** Blocks of one stream of a sequence (written or dropped), as kvmix-core counts them. */
    public int blockCount(int sequence, boolean ofKeys) {
        return (ofKeys ? keys : values).blockCount(sequence);
    }

    /** The stored bytes of one packed matrix (FORMAT.md section 3), for bit-for-bit checks against the CPU. */
    public MemorySegment packedMatrix(int sequence, boolean ofKeys, int block, int head) {
        return (ofKeys ? keys : values).packedMatrix(device, sequence, block, head);
    }

    /** Empties every sequence, keeping the device memory for the next appends. */
    public void reset() {
        checkOpen();
        device.synchronize();
        keys.reset();
        values.reset();
        uploadState(ByteBuffer.allocateDirect(stateBytes()).order(ByteOrder.LITTLE_ENDIAN));
    }

    private void checkOpen() {
        if (!open) {
            throw new IllegalStateException("layer " + layer + ": the GPU cache is closed");
        }
    }

    @Override
    public void close() {
        if (!open) {
            return;
        }
        open = false;
        device.synchronize();
        keys.close();
        values.close();
        control.close();
        staging.close();
        partialAcc.close();
        partialStats.close();
        output.close();
        attentionParams.close();
    }

    /** A device buffer reallocated (contents dropped) when a larger one is needed. */
    private final class GrowableBuffer implements AutoCloseable {
        private final String what;
        private DeviceBuffer buffer;

        GrowableBuffer(String what) {
            this.what = what;
        }

        DeviceBuffer ensure(long bytes) {
            if (buffer == null || buffer.bytes() < bytes) {
                if (buffer != null) {
                    device.synchronize();
                    buffer.close();
                    buffer = null;
                }
                buffer = device.allocate(Math.max(bytes, 4096), what);
            }
            return buffer;
        }

        DeviceBuffer buffer() {
            return buffer;
        }

        @Override
        public void close() {
            if (buffer != null) {
                buffer.close();
                buffer = null;
            }
        }
    }
}
