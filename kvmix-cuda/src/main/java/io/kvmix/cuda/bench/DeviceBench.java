package io.kvmix.cuda.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.core.cache.KvBytes;
import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.quant.BitWidth;
import io.kvmix.core.quant.Fp16;
import io.kvmix.core.quant.GroupQuantizer;
import io.kvmix.core.quant.MatrixOrigin;
import io.kvmix.core.quant.PackedLayout;
import io.kvmix.cuda.CudaDevice;
import io.kvmix.cuda.CudaRuntime;
import io.kvmix.cuda.DeviceBuffer;
import io.kvmix.cuda.cache.DeviceBatchKvCache;
import io.kvmix.cuda.cache.HostBatchKvCache;
import jcuda.Pointer;
import jcuda.driver.CUstream;
import jcuda.driver.CUstream_flags;
import jcuda.driver.JCudaDriver;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.IntStream;

/**
 * GPU benchmark of the device KV cache (issue 5), printed as one JSON object on stdout:
 * <ul>
 *   <li>device-to-device copy bandwidth (bytes read + written per second) measured in the same run;</li>
 *   <li>for batch 8 x 4096 and batch 1 x 32768 (32 query heads, 32 KV heads, head dim 128) and batch 8 x 4096
 *       with 8 KV heads: fused decode attention at 2, 3 and 4 bits (fp16 queries and outputs), its bytes read
 *       and their rate against the copy bandwidth, and the fp16 PyTorch SDPA time from {@code --sdpa FILE}
 *       (written by bench/sdpa_baseline.py in the same device call) with the speed-up;</li>
 *   <li>quantize + append time of a 4096-token fp16 prefill of keys and values for the batch, and of one
 *       decode token;</li>
 *   <li>a check against kvmix-core on sequence 0: codes and metadata of every block bit for bit, and the
 *       attention's relative error.</li>
 * </ul>
 * Times are medians of CUDA-event measurements after a warm-up; an attention sample replays a CUDA graph
 * of {@value #CALLS_PER_SAMPLE} calls, so JCuda's per-launch overhead (tens of microseconds for a kernel
 * with many parameters) is not counted; the JSON also gives the time with launches from Java.
 * Cache state: the prompt is appended as one prefill of T - 1 tokens and one decode token, with the
 * reference residual ratio for the width (so about 95% of the context is packed; the JSON gives the counts).
 *
 * <p>With {@code --occupy-sms N} the attention is timed while N multiprocessors are held by other CTAs
 * (bench_occupy.cu): a model of a GPU with more memory bandwidth per multiprocessor, for comparing kernels
 * there when no such GPU is at hand. Its times are not the GPU's. With {@code --scale F} each shape runs
 * round(F x batch) sequences (batch 1: round(F x KV heads) heads, query heads in proportion), so that its CTAs
 * fill F of the multiprocessors as the whole shape fills all of them; {@code --occupy-sms 33 --scale 0.75} on an
 * H100 gives the 99 multiprocessors left an H200's work each (the same CTAs per multiprocessor and waves) and
 * about its bandwidth each (README, "A model of the H200 on the H100").
 *
 * <p>Usage: {@code DeviceBench [--sdpa sdpa.json] [--samples N] [--shapes name,name] [--occupy-sms N] [--scale F]}
 */
public final class DeviceBench {
    private static final int HEAD_DIM = 128;
    private static final int GROUP_SIZE = 32;
    private static final int CALLS_PER_SAMPLE = 20;
    private static final int[] WIDTHS = {2, 3, 4};

    private record Shape(String name, int batch, int tokens, int queryHeads, int kvHeads) {
        /** F of the shape's CTAs: fewer sequences, or fewer heads (query heads per KV head kept) for one sequence. */
        Shape scaled(double fraction) {
            if (batch > 1) {
                return new Shape(name, Math.max(1, (int) Math.round(fraction * batch)), tokens, queryHeads, kvHeads);
            }
            int heads = Math.max(1, (int) Math.round(fraction * kvHeads));
            return new Shape(name, batch, tokens, heads * (queryHeads / kvHeads), heads);
        }
    }

    private static final List<Shape> SHAPES = List.of(
            new Shape("batch8_ctx4096", 8, 4096, 32, 32),
            new Shape("batch1_ctx32768", 1, 32768, 32, 32),
            new Shape("batch8_ctx4096_gqa8", 8, 4096, 32, 8));

    private final CudaDevice device;
    private final int samples;
    private final int occupiedSms;
    private final double scale;
    private final ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private DeviceBench(CudaDevice device, int samples, int occupiedSms, double scale) {
        this.device = device;
        this.samples = samples;
        this.occupiedSms = occupiedSms;
        this.scale = scale;
    }

    public static void main(String[] args) throws IOException {
        Path sdpaFile = null;
        int samples = 30;
        int occupiedSms = 0;
        double scale = 1;
        List<String> shapeNames = SHAPES.stream().map(Shape::name).toList();
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--sdpa" -> sdpaFile = Path.of(args[++i]);
                case "--samples" -> samples = Integer.parseInt(args[++i]);
                case "--shapes" -> shapeNames = List.of(args[++i].split(","));
                case "--occupy-sms" -> occupiedSms = Integer.parseInt(args[++i]);
                case "--scale" -> scale = Double.parseDouble(args[++i]);
                default -> throw new IllegalArgumentException("unknown argument " + args[i] + "; usage: DeviceBench"
                        + " [--sdpa sdpa.json] [--samples N] [--shapes name,name] [--occupy-sms N] [--scale F]");
            }
        }
        if (!(scale > 0 && scale <= 1)) {
            throw new IllegalArgumentException("--scale " + scale + ": must be in (0, 1]");
        }
        if (!CudaRuntime.isAvailable()) {
            System.err.println("DeviceBench: " + CudaRuntime.unavailableReason());
            System.exit(2);
        }
        List<String> selected = shapeNames;
        double fraction = scale;
        List<Shape> shapes = SHAPES.stream().filter(shape -> selected.contains(shape.name()))
                .map(shape -> shape.scaled(fraction)).toList();
        if (shapes.size() != selected.size()) {
            throw new IllegalArgumentException("--shapes " + selected + ": known shapes are "
                    + SHAPES.stream().map(Shape::name).toList());
        }
        CudaDevice device = CudaRuntime.device();
        if (occupiedSms < 0 || occupiedSms >= device.multiprocessors()) {
            throw new IllegalArgumentException("--occupy-sms " + occupiedSms + ": must be in [0, "
                    + device.multiprocessors() + ") on " + device.name());
        }
        DeviceBench bench = new DeviceBench(device, samples, occupiedSms, scale);
        JsonNode sdpa = sdpaFile == null ? null : bench.json.readTree(sdpaFile.toFile());
        System.out.println(bench.json.writeValueAsString(bench.run(shapes, sdpa)));
    }

    private ObjectNode run(List<Shape> shapes, JsonNode sdpa) {
        ObjectNode result = json.createObjectNode();
        ObjectNode deviceNode = result.putObject("device");
        deviceNode.put("name", device.name());
        deviceNode.put("compute_capability", device.computeCapability());
        deviceNode.put("multiprocessors", device.multiprocessors());
        deviceNode.put("ptx", device.ptxArch());
        if (occupiedSms > 0) {
            result.put("occupied_multiprocessors", occupiedSms);
            result.put("occupied_note", "attention times with " + occupiedSms + " multiprocessors held by other CTAs:"
                    + " a model of more bandwidth per multiprocessor, not this GPU's times (speed-ups and fractions"
                    + " of copy bandwidth are not meaningful)");
        }
        if (scale != 1) {
            result.put("shape_scale", scale);
            result.put("shape_scale_note", "each shape ran with the batch (or, for one sequence, the heads) given in"
                    + " it, scaled by " + scale + " from the shape its name and sdpa_fp16 stand for");
        }
        result.put("method", "medians of " + samples + " CUDA-event samples after warm-up; an attention sample"
                + " replays a CUDA graph of " + CALLS_PER_SAMPLE + " calls (split kernel + combine kernel), fp16"
                + " queries and outputs; cache filled by a prefill of T-1 tokens plus one decode token, reference"
                + " residual ratios, G=32");
        double copyBytesPerSecond = copyBandwidth(result.putObject("copy"));
        ArrayNode measured = result.putArray("shapes");
        for (Shape shape : shapes) {
            measured.add(measure(shape, copyBytesPerSecond, sdpa == null ? null : sdpa.get(shape.name())));
        }
        return result;
    }

    /** Device-to-device copy of 1 GiB: (read + written bytes) / median time. */
    private double copyBandwidth(ObjectNode out) {
        long bytes = 1L << 30;
        try (DeviceBuffer a = device.allocate(bytes, "copy source"); DeviceBuffer b = device.allocate(bytes, "copy target");
             CudaDevice.EventTimer timer = device.timer()) {
            a.clear();
            double[] millis = new double[samples];
            for (int i = -3; i < samples; i++) {
                timer.start();
                b.copyFrom(a, bytes);
                float ms = timer.stopMillis();
                if (i >= 0) {
                    millis[i] = ms;
                }
            }
            double median = median(millis);
            double rate = 2.0 * bytes / (median / 1e3);
            out.put("bytes_copied", bytes);
            out.put("median_ms", median);
            out.put("bytes_read_plus_written_per_s", rate);
            out.put("tb_per_s", rate / 1e12);
            return rate;
        }
    }

    private ObjectNode measure(Shape shape, double copyRate, JsonNode sdpa) {
        ObjectNode out = json.createObjectNode();
        out.put("shape", shape.name());
        out.put("batch", shape.batch());
        out.put("context_tokens", shape.tokens());
        out.put("query_heads", shape.queryHeads());
        out.put("kv_heads", shape.kvHeads());
        out.put("head_dim", HEAD_DIM);
        KvGeometry geometry = new KvGeometry(shape.kvHeads(), HEAD_DIM, shape.tokens() + 64, 0);
        int rowWidth = geometry.rowWidth();
        long rows = (long) shape.batch() * shape.tokens();
        // Keys and values [batch][tokens][kvHeads * D] fp16, sequence after sequence; the prefill is tokens - 1 rows.
        short[] keys = randomHalf(rows * rowWidth, 1);
        short[] values = randomHalf(rows * rowWidth, 2);
        short[] queries = randomHalf((long) shape.batch() * shape.queryHeads() * HEAD_DIM, 3);
        double sdpaMs = sdpa == null ? Double.NaN : sdpa.get("median_ms").asDouble();
        if (sdpa != null) {
            out.set("sdpa_fp16", sdpa);
        }
        ArrayNode widths = out.putArray("fused_attention");
        try (DeviceBuffer keyRows = device.allocate(2L * keys.length, shape.name() + " key rows");
             DeviceBuffer valueRows = device.allocate(2L * values.length, shape.name() + " value rows");
             DeviceBuffer q = device.allocate(2L * queries.length, shape.name() + " queries");
             DeviceBuffer o = device.allocate(2L * queries.length, shape.name() + " outputs");
             CudaDevice.EventTimer timer = device.timer()) {
            keyRows.upload(keys, keys.length);
            valueRows.upload(values, values.length);
            q.upload(queries, queries.length);
            for (int bits : WIDTHS) {
                LayerQuant quant = LayerQuant.reference(bits, bits);
                try (DeviceBatchKvCache cache = new DeviceBatchKvCache(device, geometry, 0, quant, GROUP_SIZE, shape.batch())) {
                    ObjectNode width = widths.addObject();
                    width.put("bits", bits);
                    if (shape.batch() > 1 || shape.tokens() == 4096) {
                        width.set("append", appendTimes(cache, shape, keyRows, valueRows, timer, copyRate));
                    }
                    fill(cache, shape, keyRows, valueRows);
                    KvBytes bytes = KvBytes.ZERO;
                    for (int s = 0; s < shape.batch(); s++) {
                        bytes = bytes.plus(cache.bytes(s));
                    }
                    long bytesRead = bytes.total() + 2L * 2 * queries.length;  // cache + fp16 queries and outputs
                    float scale = (float) (1 / Math.sqrt(HEAD_DIM));
                    int chosen = cache.splitUnits(shape.queryHeads());
                    double median = attentionMillis(cache, q, o, shape, scale, chosen, timer);
                    width.put("median_ms", median);
                    width.put("split_tokens", 32 * chosen);
                    ObjectNode sweep = width.putObject("median_ms_by_split_tokens");
                    for (int units : new int[] {4, 8, 16, 32, 64}) {
                        sweep.put(Integer.toString(32 * units), attentionMillis(cache, q, o, shape, scale, units, timer));
                    }
                    width.put("median_ms_without_graph", streamAttentionMillis(cache, q, o, shape, scale, timer));
                    width.put("packed_key_tokens_seq0", shape.tokens() - cache.keyFpLength(0));
                    width.put("fp_key_tokens_seq0", cache.keyFpLength(0));
                    width.put("cache_bytes", bytes.total());
                    width.put("bytes_read", bytesRead);
                    double rate = bytesRead / (median / 1e3);
                    width.put("bytes_read_per_s", rate);
                    width.put("fraction_of_copy_bandwidth", rate / copyRate);
                    if (!Double.isNaN(sdpaMs)) {
                        width.put("speedup_vs_sdpa", sdpaMs / median);
                    }
                    if (shape.tokens() == 4096) {
                        width.set("check_vs_cpu", checkAgainstCpu(cache, shape, quant, keys, values, queries, o));
                    }
                }
            }
        }
        return out;
    }

    /**
     * Median milliseconds of one attention call (split kernel + combine), from a CUDA graph of
     * {@value #CALLS_PER_SAMPLE} calls replayed per sample: kernel time without host launch overhead.
     */
    private double attentionMillis(DeviceBatchKvCache cache, DeviceBuffer q, DeviceBuffer o, Shape shape, float scale,
                                   int splitUnits, CudaDevice.EventTimer timer) {
        cache.attendDevice(q, true, shape.queryHeads(), scale, o, true, splitUnits);  // sizes the partial buffers
        try (CudaDevice.Graph graph = device.capture(() -> {
            for (int c = 0; c < CALLS_PER_SAMPLE; c++) {
                cache.attendDevice(q, true, shape.queryHeads(), scale, o, true, splitUnits);
            }
        }); Occupier held = occupiedSms > 0 ? new Occupier(device, occupiedSms) : null) {
            double[] millis = new double[samples];
            for (int i = -3; i < samples; i++) {
                timer.start();
                graph.launch();
                float ms = timer.stopMillis() / CALLS_PER_SAMPLE;
                if (i >= 0) {
                    millis[i] = ms;
                }
            }
            return median(millis);
        }
    }

    /**
     * {@code count} CTAs of kvmix_bench_occupy on a stream of their own, each holding a whole multiprocessor's
     * shared memory until closed; the constructor returns once all of them are resident.
     */
    private static final class Occupier implements AutoCloseable {
        private static final long RESIDENT_WAIT_NANOS = 5_000_000_000L;
        private final DeviceBuffer state;  // [0] release flag, [1] CTAs resident
        private final CUstream stream = new CUstream();

        Occupier(CudaDevice device, int count) {
            state = device.allocate(2 * Integer.BYTES, "occupier state");
            state.clear();
            device.synchronize();  // the CTAs read the flag on another stream
            JCudaDriver.cuStreamCreate(stream, CUstream_flags.CU_STREAM_NON_BLOCKING);
            JCudaDriver.cuLaunchKernel(device.kernel("bench_occupy", "kvmix_bench_occupy"), count, 1, 1, 32, 1, 1,
                    device.maxSharedPerCta(), stream, Pointer.to(Pointer.to(new long[] {state.address()})), null);
            int[] seen = new int[2];
            long deadline = System.nanoTime() + RESIDENT_WAIT_NANOS;
            do {
                state.download(seen, 2);
            } while (seen[1] < count && System.nanoTime() < deadline);
            if (seen[1] < count) {
                close();
                throw new IllegalStateException("--occupy-sms " + count + ": only " + seen[1]
                        + " occupying CTAs became resident within 5 s");
            }
        }

        @Override
        public void close() {
            ByteBuffer release = ByteBuffer.allocateDirect(Integer.BYTES).order(ByteOrder.LITTLE_ENDIAN).putInt(0, 1);
            state.upload(release, Integer.BYTES, 0);
            JCudaDriver.cuStreamSynchronize(stream);
            JCudaDriver.cuStreamDestroy(stream);
            state.close();
        }
    }

    /** The same calls launched one by one from Java (JCuda launch overhead included when it exceeds the kernels). */
    private double streamAttentionMillis(DeviceBatchKvCache cache, DeviceBuffer q, DeviceBuffer o, Shape shape,
                                         float scale, CudaDevice.EventTimer timer) {
        double[] millis = new double[samples];
        for (int i = -3; i < samples; i++) {
            timer.start();
            for (int c = 0; c < CALLS_PER_SAMPLE; c++) {
                cache.attendDevice(q, true, shape.queryHeads(), scale, o, true);
            }
            float ms = timer.stopMillis() / CALLS_PER_SAMPLE;
            if (i >= 0) {
                millis[i] = ms;
            }
        }
        return median(millis);
    }

    /** Prefill of tokens - 1 rows per sequence, then one decode token (the last row). */
    private void fill(DeviceBatchKvCache cache, Shape shape, DeviceBuffer keyRows, DeviceBuffer valueRows) {
        cache.reset();
        // the rows of sequence s start at row s * tokens: one append per sequence, each from its own rows
        for (int s = 0; s < shape.batch(); s++) {
            int[] tokens = new int[shape.batch()];
            tokens[s] = shape.tokens() - 1;
            appendFrom(cache, keyRows, valueRows, (long) s * shape.tokens(), tokens);
        }
        for (int s = 0; s < shape.batch(); s++) {
            int[] tokens = new int[shape.batch()];
            tokens[s] = 1;
            appendFrom(cache, keyRows, valueRows, (long) s * shape.tokens() + shape.tokens() - 1, tokens);
        }
    }

    private static void appendFrom(DeviceBatchKvCache cache, DeviceBuffer keyRows, DeviceBuffer valueRows, long firstRow,
                                   int[] tokens) {
        long offset = 2L * firstRow * cache.geometry().rowWidth();
        DeviceBatchKvCache.PreparedAppend append = cache.prepareAppend(tokens);
        append.launch(keyRows.address() + offset, valueRows.address() + offset, true);
        append.finish();
    }

    /**
     * Quantize + append of a 4096-token fp16 prefill of keys and values for the whole batch (one append, the
     * rows of all sequences back to back), and of single decode tokens after it.
     */
    private ObjectNode appendTimes(DeviceBatchKvCache cache, Shape shape, DeviceBuffer keyRows, DeviceBuffer valueRows,
                                   CudaDevice.EventTimer timer, double copyRate) {
        ObjectNode out = json.createObjectNode();
        int[] prefill = new int[shape.batch()];
        Arrays.fill(prefill, 4096);
        double[] millis = new double[samples];
        for (int i = -3; i < samples; i++) {
            cache.reset();
            DeviceBatchKvCache.PreparedAppend append = cache.prepareAppend(prefill);
            timer.start();
            append.launch(keyRows.address(), valueRows.address(), true);
            float ms = timer.stopMillis();
            append.finish();
            if (i >= 0) {
                millis[i] = ms;
            }
        }
        double median = median(millis);
        // bytes: fp16 input read, fp16 FP rows written (the step attends over its own tokens in full precision),
        // packed blocks written
        long tokens = 4096L * shape.batch();
        long fp16Bytes = 2 * tokens * cache.geometry().rowWidth() * 2;
        long packedBytes = 0;
        for (int s = 0; s < shape.batch(); s++) {
            packedBytes += cache.keyBytes(s).codes() + cache.keyBytes(s).metadata() + cache.valueBytes(s).codes()
                    + cache.valueBytes(s).metadata();
        }
        long moved = 2 * fp16Bytes + packedBytes;
        ObjectNode prefillNode = out.putObject("prefill_4096");
        prefillNode.put("median_ms", median);
        prefillNode.put("tokens_quantized_per_sequence", 4096 - cache.keyFpLength(0));
        prefillNode.put("input_bytes_read", fp16Bytes);
        prefillNode.put("fp_rows_bytes_written", fp16Bytes);
        prefillNode.put("packed_bytes_written", packedBytes);
        prefillNode.put("bytes_read_plus_written_per_s", moved / (median / 1e3));
        prefillNode.put("fraction_of_copy_bandwidth", moved / (median / 1e3) / copyRate);
        prefillNode.put("input_plus_packed_bytes_per_s", (fp16Bytes + packedBytes) / (median / 1e3));

        // decode: rows of the prompt reused as new tokens, one per sequence per step
        int[] one = new int[shape.batch()];
        Arrays.fill(one, 1);
        int steps = 40;
        double[] stepMillis = new double[steps];
        long rowBytes = 2L * cache.geometry().rowWidth() * shape.batch();
        int spillingSteps = 0;
        for (int i = 0; i < steps; i++) {
            DeviceBatchKvCache.PreparedAppend append = cache.prepareAppend(one);
            spillingSteps += append.quantizedGroups() > 0 ? 1 : 0;
            timer.start();
            append.launch(keyRows.address() + i * rowBytes, valueRows.address() + i * rowBytes, true);
            stepMillis[i] = timer.stopMillis();
            append.finish();
        }
        ObjectNode decode = out.putObject("decode_token");
        decode.put("steps", steps);
        decode.put("steps_that_quantize_groups", spillingSteps);
        decode.put("median_ms_with_launch", median(stepMillis));
        decode.put("max_ms_with_launch", Arrays.stream(stepMillis).max().orElseThrow());
        DeviceBatchKvCache.PreparedAppend append = cache.prepareAppend(one);
        while (append.quantizedGroups() > 0) {  // time a typical step: one that only writes the new rows
            append.launch(keyRows.address(), valueRows.address(), true);
            append.finish();
            append = cache.prepareAppend(one);
        }
        DeviceBatchKvCache.PreparedAppend typical = append;
        try (CudaDevice.Graph graph = device.capture(() -> {
            for (int c = 0; c < CALLS_PER_SAMPLE; c++) {
                typical.launch(keyRows.address(), valueRows.address(), true);
            }
        })) {
            double[] replayMillis = new double[samples];
            for (int i = 0; i < samples; i++) {
                timer.start();
                graph.launch();
                replayMillis[i] = timer.stopMillis() / CALLS_PER_SAMPLE;
            }
            decode.put("median_ms", median(replayMillis));
        }
        typical.launch(keyRows.address(), valueRows.address(), true);
        typical.finish();
        decode.put("note", "median_ms: kernels of a step that quantizes nothing, replayed from a CUDA graph;"
                + " *_with_launch: CUDA events around the two launches from Java, over " + steps + " steps");
        return out;
    }

    /** Sequence 0 against kvmix-core: every packed matrix bit for bit, then the attention output. */
    private ObjectNode checkAgainstCpu(DeviceBatchKvCache cache, Shape shape, LayerQuant quant, short[] keys,
                                       short[] values, short[] queries, DeviceBuffer gpuOut) {
        ObjectNode out = json.createObjectNode();
        KvGeometry geometry = cache.geometry();
        int rowWidth = geometry.rowWidth();
        int tokens = shape.tokens();
        MemorySegment keyRows = Arena.ofAuto().allocate(2L * tokens * rowWidth);
        MemorySegment valueRows = Arena.ofAuto().allocate(2L * tokens * rowWidth);
        MemorySegment.copy(keys, 0, keyRows, Fp16.LAYOUT, 0, tokens * rowWidth);
        MemorySegment.copy(values, 0, valueRows, Fp16.LAYOUT, 0, tokens * rowWidth);
        int mismatches = 0;
        int matrices = 0;
        for (boolean ofKeys : new boolean[] {true, false}) {
            BitWidth bits = (ofKeys ? quant.keys() : quant.values()).bits();
            PackedLayout layout = ofKeys ? PackedLayout.keys(bits, GROUP_SIZE, HEAD_DIM)
                    : PackedLayout.values(bits, GROUP_SIZE, HEAD_DIM);
            MemorySegment cpu = Arena.ofAuto().allocate(layout.bytes());
            for (int block = 0; block < cache.blockCount(0, ofKeys); block++) {
                for (int head = 0; head < geometry.kvHeads(); head++) {
                    long src = 2L * ((long) block * GROUP_SIZE * rowWidth + head * HEAD_DIM);
                    MemorySegment rows = ofKeys ? keyRows : valueRows;
                    MatrixOrigin origin = ofKeys ? MatrixOrigin.keys(0, head, block * GROUP_SIZE)
                            : MatrixOrigin.values(0, head, block * GROUP_SIZE);
                    GroupQuantizer.fastest().quantize(rows, src, ofKeys ? rowWidth : 1, ofKeys ? 1 : rowWidth, layout,
                            cpu, 0, origin);
                    if (cpu.mismatch(cache.packedMatrix(0, ofKeys, block, head)) >= 0) {
                        mismatches++;
                    }
                    matrices++;
                }
            }
        }
        out.put("packed_matrices_compared", matrices);
        out.put("packed_matrices_differing", mismatches);

        float[] keyFloats = new float[tokens * rowWidth];
        float[] valueFloats = new float[tokens * rowWidth];
        for (int i = 0; i < keyFloats.length; i++) {
            keyFloats[i] = Fp16.decode(keys[i]);
            valueFloats[i] = Fp16.decode(values[i]);
        }
        int rowFloats = shape.queryHeads() * HEAD_DIM;
        float[] q = new float[rowFloats];
        for (int i = 0; i < rowFloats; i++) {
            q[i] = Fp16.decode(queries[i]);
        }
        float[] expected = new float[rowFloats];
        try (HostBatchKvCache host = new HostBatchKvCache(geometry, 0, quant, GROUP_SIZE, 1)) {
            host.append(Arrays.copyOf(keyFloats, (tokens - 1) * rowWidth), Arrays.copyOf(valueFloats, (tokens - 1) * rowWidth),
                    new int[] {tokens - 1});
            host.append(Arrays.copyOfRange(keyFloats, (tokens - 1) * rowWidth, tokens * rowWidth),
                    Arrays.copyOfRange(valueFloats, (tokens - 1) * rowWidth, tokens * rowWidth), new int[] {1});
            host.attend(q, shape.queryHeads(), (float) (1 / Math.sqrt(HEAD_DIM)), expected);
            out.put("cpu_bytes_equal", host.bytes(0).equals(cache.bytes(0)));
        }
        short[] gpuHalf = new short[rowFloats];
        gpuOut.download(0, 2 * rowFloats).asShortBuffer().get(gpuHalf);
        double diff = 0;
        double norm = 0;
        for (int i = 0; i < rowFloats; i++) {
            double e = expected[i];
            double a = Fp16.decode(gpuHalf[i]);
            diff += (a - e) * (a - e);
            norm += e * e;
        }
        out.put("attention_relative_error_seq0", Math.sqrt(diff / norm));
        out.put("note", "GPU output is fp16, so the error includes its rounding (~3e-4)");
        return out;
    }

    /** fp16 N(0, 1) values, generated in parallel from a fixed seed. */
    private static short[] randomHalf(long count, long seed) {
        short[] out = new short[Math.toIntExact(count)];
        int chunk = 1 << 20;
        IntStream.range(0, (out.length + chunk - 1) / chunk).parallel().forEach(c -> {
            SplittableRandom random = new SplittableRandom(seed * 1_000_003L + c);
            for (int i = c * chunk; i < Math.min(out.length, (c + 1) * chunk); i++) {
                out[i] = Fp16.encode((float) random.nextGaussian());
            }
        });
        return out;
    }

    private static double median(double[] values) {
        double[] sorted = values.clone();
        Arrays.sort(sorted);
        int n = sorted.length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}
