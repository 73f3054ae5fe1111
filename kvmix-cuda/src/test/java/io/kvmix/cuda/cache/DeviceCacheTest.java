package io.kvmix.cuda.cache;

import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.plan.ResidualPolicy;
import io.kvmix.core.plan.StreamQuant;
import io.kvmix.core.quant.BitWidth;
import io.kvmix.core.quant.Fp16;
import io.kvmix.core.quant.QuantizationException;
import io.kvmix.cuda.CudaDevice;
import io.kvmix.cuda.DeviceBuffer;
import io.kvmix.cuda.GpuTests;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.Arrays;
import java.util.Random;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The GPU batch cache against the CPU one ({@link HostBatchKvCache}, kvmix-core) step by step: lengths, FP
 * buffer lengths, exact live bytes, stored values bit for bit, and fused decode attention (relative error
 * below 1e-3) for every width, GQA, sinks, residual policies, sliding windows and ragged batches.
 */
class DeviceCacheTest {
    private static final double MAX_RELATIVE_ERROR = 1e-3;

    /**
     * @param prefill     tokens of each sequence's first append (a ragged batch)
     * @param decodeSteps single-token appends that follow (sequence s skips steps where (step + s) % 5 == 4)
     */
    record Scenario(String name, LayerQuant quant, int groupSize, int kvHeads, int queryHeads, int headDim,
                    int slidingWindow, int[] prefill, int decodeSteps) {
        @Override
        public String toString() {
            return name;
        }
    }

    private static LayerQuant widths(int kBits, int vBits, ResidualPolicy policy, int sinks) {
        return new LayerQuant(new StreamQuant(BitWidth.of(kBits), policy), new StreamQuant(BitWidth.of(vBits), policy), sinks);
    }

    /**
     * Together the scenarios run every attention kernel (head dim 64 and 128 x 1, 2, 4 and 8 query heads per KV
     * head) and the groups that run on a larger kernel (3, 6) or in several tiles of 8 (16).
     */
    static Stream<Scenario> scenarios() {
        return Stream.of(
                new Scenario("2-bit, reference ratios, ragged", LayerQuant.reference(2, 2), 32, 4, 4, 128, 0,
                        new int[] {300, 77, 1, 513}, 40),
                new Scenario("1-bit, D=64", LayerQuant.reference(1, 1), 32, 2, 2, 64, 0, new int[] {250, 96}, 70),
                new Scenario("3-bit keys, 4-bit values, GQA 4", LayerQuant.reference(3, 4), 32, 2, 8, 128, 0,
                        new int[] {400, 129, 31}, 30),
                new Scenario("4-bit, window 64, 4 sinks, G=64, GQA 2", widths(4, 4, new ResidualPolicy.Window(64), 4), 64,
                        4, 8, 64, 0, new int[] {333, 3, 140}, 70),
                new Scenario("2-bit keys, 3-bit values, sliding window 200, GQA 8",
                        new LayerQuant(StreamQuant.reference(2), StreamQuant.reference(3), 0), 32, 1, 8, 128, 200,
                        new int[] {700, 450}, 40),
                new Scenario("3-bit, window 0, 33 sinks, G=128, sliding window 300",
                        widths(3, 3, new ResidualPolicy.Window(0), 33), 128, 2, 2, 128, 300, new int[] {530, 40}, 150),
                new Scenario("4-bit keys, 1-bit values, D=64, GQA 8, G=256, 2 sinks",
                        new LayerQuant(StreamQuant.reference(4), StreamQuant.reference(1), 2), 256, 1, 8, 64, 0,
                        new int[] {600, 290}, 40),
                new Scenario("3-bit keys, 2-bit values, window 48, 3 sinks, D=64, GQA 4, sliding window 100",
                        new LayerQuant(new StreamQuant(BitWidth.THREE, new ResidualPolicy.Window(48)),
                                new StreamQuant(BitWidth.TWO, new ResidualPolicy.Window(48)), 3), 32, 2, 8, 64, 100,
                        new int[] {260, 181, 5}, 30),
                new Scenario("2-bit keys window 16, 4-bit values ratio, long context",
                        new LayerQuant(new StreamQuant(BitWidth.TWO, new ResidualPolicy.Window(16)),
                                StreamQuant.reference(4), 0), 32, 2, 4, 128, 0, new int[] {4096, 1000}, 20),
                new Scenario("2-bit, GQA 3 (on the GQA 4 kernel), ragged", LayerQuant.reference(2, 2), 32, 2, 6, 128, 0,
                        new int[] {450, 70, 260}, 30),
                new Scenario("3-bit keys, 2-bit values, D=64, GQA 6 (on the GQA 8 kernel), 2 sinks",
                        new LayerQuant(StreamQuant.reference(3), StreamQuant.reference(2), 2), 32, 2, 12, 64, 0,
                        new int[] {380, 150}, 30),
                new Scenario("4-bit, GQA 16 (two tiles of 8), sliding window 256",
                        LayerQuant.reference(4, 4), 64, 1, 16, 128, 256, new int[] {640, 333}, 30));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("scenarios")
    void matchesTheCpuCacheStepByStep(Scenario scenario) {
        CudaDevice device = GpuTests.device();
        int batch = scenario.prefill().length;
        int maxTokens = Arrays.stream(scenario.prefill()).max().orElseThrow() + scenario.decodeSteps() + 1;
        KvGeometry geometry = new KvGeometry(scenario.kvHeads(), scenario.headDim(), maxTokens, scenario.slidingWindow());
        Random random = new Random(scenario.name().hashCode());
        try (DeviceBatchKvCache gpu = new DeviceBatchKvCache(device, geometry, 7, scenario.quant(), scenario.groupSize(), batch);
             HostBatchKvCache cpu = new HostBatchKvCache(geometry, 7, scenario.quant(), scenario.groupSize(), batch)) {
            step(gpu, cpu, scenario, random, scenario.prefill());
            for (int i = 0; i < scenario.decodeSteps(); i++) {
                int[] tokens = new int[batch];
                for (int s = 0; s < batch; s++) {
                    tokens[s] = (i + s) % 5 == 4 ? 0 : 1;
                }
                step(gpu, cpu, scenario, random, tokens);
            }
        }
    }

    private static void step(DeviceBatchKvCache gpu, HostBatchKvCache cpu, Scenario scenario, Random random, int[] tokens) {
        int rows = Arrays.stream(tokens).sum();
        float[] keys = TestRows.random(random, rows * gpu.geometry().rowWidth());
        float[] values = TestRows.random(random, rows * gpu.geometry().rowWidth());
        gpu.append(keys, values, tokens);
        cpu.append(keys, values, tokens);
        for (int s = 0; s < gpu.batch(); s++) {
            String where = scenario + ", sequence " + s + " at length " + cpu.length(s);
            assertEquals(cpu.length(s), gpu.length(s), where);
            assertEquals(cpu.keyFpLength(s), gpu.keyFpLength(s), where + ": key FP buffer");
            assertEquals(cpu.valueFpLength(s), gpu.valueFpLength(s), where + ": value FP buffer");
            assertEquals(cpu.keyBytes(s), gpu.keyBytes(s), where + ": key bytes");
            assertEquals(cpu.valueBytes(s), gpu.valueBytes(s), where + ": value bytes");
            if (tokens[s] > 1 || cpu.length(s) % 16 == 0) {  // a full comparison now and then keeps the test fast
                int from = scenario.slidingWindow() > 0 ? Math.max(0, cpu.length(s) - scenario.slidingWindow()) : 0;
                assertArrayEquals(cpu.storedKeys(s, from), gpu.storedKeys(s, from), where + ": stored keys");
                assertArrayEquals(cpu.storedValues(s, from), gpu.storedValues(s, from), where + ": stored values");
            }
        }
        int queryFloats = gpu.batch() * scenario.queryHeads() * scenario.headDim();
        float[] queries = TestRows.random(random, queryFloats);
        float scale = (float) (1 / Math.sqrt(scenario.headDim()));
        float[] expected = new float[queryFloats];
        float[] actual = new float[queryFloats];
        cpu.attend(queries, scenario.queryHeads(), scale, expected);
        gpu.attend(queries, scenario.queryHeads(), scale, actual);
        int rowFloats = scenario.queryHeads() * scenario.headDim();
        for (int s = 0; s < gpu.batch(); s++) {
            double error = TestRows.relativeError(expected, actual, s * rowFloats, rowFloats);
            assertTrue(error < MAX_RELATIVE_ERROR, scenario + ", sequence " + s + " at length " + cpu.length(s)
                    + ": attention relative error " + error);
        }
    }

    @Test
    void fp16QueriesAndOutputs() {
        CudaDevice device = GpuTests.device();
        KvGeometry geometry = new KvGeometry(2, 128, 1024, 0);
        LayerQuant quant = LayerQuant.reference(2, 2);
        int queryHeads = 4;
        Random random = new Random(5);
        try (DeviceBatchKvCache gpu = new DeviceBatchKvCache(device, geometry, 0, quant, 32, 2);
             HostBatchKvCache cpu = new HostBatchKvCache(geometry, 0, quant, 32, 2)) {
            int[] tokens = {600, 200};
            float[] keys = TestRows.random(random, 800 * geometry.rowWidth());
            float[] values = TestRows.random(random, 800 * geometry.rowWidth());
            gpu.append(keys, values, tokens);
            cpu.append(keys, values, tokens);
            int n = 2 * queryHeads * 128;
            float[] queries = TestRows.random(random, n);
            short[] half = new short[n];
            for (int i = 0; i < n; i++) {
                half[i] = Fp16.encode(queries[i]);
                queries[i] = Fp16.decode(half[i]);
            }
            float[] expected = new float[n];
            cpu.attend(queries, queryHeads, 0.088f, expected);
            try (DeviceBuffer q = device.allocate(2L * n, "test queries"); DeviceBuffer out = device.allocate(2L * n, "test out")) {
                q.upload(half, n);
                gpu.attendDevice(q, true, queryHeads, 0.088f, out, true);
                java.nio.ShortBuffer outHalf = out.download(0, 2 * n).asShortBuffer();
                float[] actual = new float[n];
                for (int i = 0; i < n; i++) {
                    actual[i] = Fp16.decode(outHalf.get(i));
                }
                double error = TestRows.relativeError(expected, actual, 0, n);
                assertTrue(error < MAX_RELATIVE_ERROR, "fp16 attention relative error " + error);
            }
        }
    }

    @Test
    void nonFiniteInputIsRejectedAndTheAppendUndone() {
        CudaDevice device = GpuTests.device();
        KvGeometry geometry = new KvGeometry(2, 64, 512, 0);
        LayerQuant quant = LayerQuant.reference(2, 2);
        Random random = new Random(11);
        try (DeviceBatchKvCache gpu = new DeviceBatchKvCache(device, geometry, 4, quant, 32, 2);
             HostBatchKvCache cpu = new HostBatchKvCache(geometry, 4, quant, 32, 2)) {
            float[] keys = TestRows.random(random, 150 * geometry.rowWidth());
            float[] values = TestRows.random(random, 150 * geometry.rowWidth());
            gpu.append(keys, values, new int[] {100, 50});
            cpu.append(keys, values, new int[] {100, 50});
            float[] badKeys = TestRows.random(random, 80 * geometry.rowWidth());
            float[] badValues = TestRows.random(random, 80 * geometry.rowWidth());
            badValues[(40 + 2) * geometry.rowWidth() + 64 + 5] = 70000f;  // sequence 1, its token 2, head 1, channel 5
            QuantizationException e = assertThrows(QuantizationException.class,
                    () -> gpu.append(badKeys, badValues, new int[] {40, 40}));
            assertEquals("layer 4 values, sequence 1, kv-head 1, token 52, channel 5: value 70000.0 is not finite in fp16"
                    + " (|x| must be < 65520)", e.getMessage());
            assertEquals(100, gpu.length(0));
            assertEquals(50, gpu.length(1));
            assertEquals(cpu.bytes(0), gpu.bytes(0));
            float[] goodKeys = TestRows.random(random, 60 * geometry.rowWidth());
            float[] goodValues = TestRows.random(random, 60 * geometry.rowWidth());
            gpu.append(goodKeys, goodValues, new int[] {30, 30});
            cpu.append(goodKeys, goodValues, new int[] {30, 30});
            for (int s = 0; s < 2; s++) {
                assertEquals(cpu.bytes(s), gpu.bytes(s));
                assertArrayEquals(cpu.storedKeys(s, 0), gpu.storedKeys(s, 0));
                assertArrayEquals(cpu.storedValues(s, 0), gpu.storedValues(s, 0));
            }
        }
    }

    @Test
    void nonFiniteHalfInputIsRejected() {
        CudaDevice device = GpuTests.device();
        KvGeometry geometry = new KvGeometry(2, 128, 256, 0);
        LayerQuant quant = LayerQuant.reference(3, 2);
        Random random = new Random(12);
        float[] keys = TestRows.random(random, 96 * geometry.rowWidth());
        float[] values = TestRows.random(random, 96 * geometry.rowWidth());
        int bad = (64 + 7) * geometry.rowWidth() + 128 + 99;  // sequence 1, its token 7, head 1, channel 99
        keys[bad] = Float.NaN;
        try (DeviceBatchKvCache gpu = new DeviceBatchKvCache(device, geometry, 2, quant, 32, 2);
             DeviceBuffer badKeys = TestRows.halfRows(device, keys);
             DeviceBuffer v = TestRows.halfRows(device, values)) {
            QuantizationException e = assertThrows(QuantizationException.class,
                    () -> gpu.appendDevice(badKeys, v, true, new int[] {64, 32}));
            assertEquals("layer 2 keys, sequence 1, kv-head 1, token 7, channel 99: value NaN is not finite in fp16"
                    + " (|x| must be < 65520)", e.getMessage());
            assertEquals(0, gpu.length(0));
            assertEquals(0, gpu.length(1));
            keys[bad] = 0.5f;
            try (DeviceBuffer k = TestRows.halfRows(device, keys)) {
                gpu.appendDevice(k, v, true, new int[] {64, 32});
            }
            assertEquals(64, gpu.length(0));
            assertEquals(32, gpu.length(1));
        }
    }

    @Test
    void scaleOverflowIsRejected() {
        CudaDevice device = GpuTests.device();
        KvGeometry geometry = new KvGeometry(1, 64, 256, 0);
        StreamQuant oneBit = new StreamQuant(BitWidth.ONE, new ResidualPolicy.Window(0));
        try (DeviceBatchKvCache gpu = new DeviceBatchKvCache(device, geometry, 2, new LayerQuant(oneBit, oneBit, 0), 32, 1)) {
            float[] keys = new float[32 * 64];
            float[] values = new float[32 * 64];
            keys[3 * 64 + 9] = 40000f;    // token 3, channel 9: range 80000 needs a 1-bit scale above fp16's max
            keys[17 * 64 + 9] = -40000f;
            QuantizationException e = assertThrows(QuantizationException.class,
                    () -> gpu.append(keys, values, new int[] {32}));
            assertEquals("sequence 0, layer 2 keys, kv-head 0, tokens 0..31, channel 9: the group's range needs a scale"
                    + " that overflows fp16 at 1 bits", e.getMessage());
            assertEquals(0, gpu.length(0));
        }
    }
}
