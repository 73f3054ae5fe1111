package io.kvmix.cuda.cache;

import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.plan.ResidualPolicy;
import io.kvmix.core.plan.StreamQuant;
import io.kvmix.core.quant.BitWidth;
import io.kvmix.core.quant.Fp16;
import io.kvmix.core.quant.MatrixOrigin;
import io.kvmix.core.quant.PackedLayout;
import io.kvmix.core.quant.ScalarGroupQuantizer;
import io.kvmix.cuda.CudaDevice;
import io.kvmix.cuda.DeviceBuffer;
import io.kvmix.cuda.GpuTests;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.HexFormat;
import java.util.Random;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

/** GPU codes and metadata are the bytes kvmix-core's reference quantizer writes for the same fp16 input. */
class DeviceQuantizerTest {
    private static final int HEADS = 2;
    private static final int BATCH = 2;

    static Stream<Arguments> shapes() {
        Stream.Builder<Arguments> cases = Stream.builder();
        for (int bits = 1; bits <= 4; bits++) {
            for (int groupSize : new int[] {32, 64, 128}) {
                for (int headDim : new int[] {64, 128}) {
                    cases.add(Arguments.of(bits, groupSize, headDim));
                }
            }
        }
        return cases.build();
    }

    @ParameterizedTest(name = "{0}-bit, G={1}, D={2}")
    @MethodSource("shapes")
    void packedMatricesMatchTheCpuQuantizer(int bits, int groupSize, int headDim) {
        CudaDevice device = GpuTests.device();
        // window 0: every whole group is quantized at once, so each block comes straight from the input
        StreamQuant stream = new StreamQuant(BitWidth.of(bits), new ResidualPolicy.Window(0));
        LayerQuant quant = new LayerQuant(stream, stream, 0);
        KvGeometry geometry = new KvGeometry(HEADS, headDim, 4 * groupSize, 0);
        int[] tokens = {2 * groupSize + 5, 3 * groupSize};
        int rows = tokens[0] + tokens[1];
        Random random = new Random(bits * 1000L + groupSize * 10L + headDim);
        boolean halfInput = bits % 2 == 0;  // half the cases feed fp16 rows from the device, half fp32 from the host
        // one stream Gaussian, the other on a grid that makes rounding ties
        float[] keys = halfInput ? TestRows.grid(random, rows * geometry.rowWidth()) : TestRows.random(random, rows * geometry.rowWidth());
        float[] values = halfInput ? TestRows.random(random, rows * geometry.rowWidth()) : TestRows.grid(random, rows * geometry.rowWidth());
        try (DeviceBatchKvCache cache = new DeviceBatchKvCache(device, geometry, 0, quant, groupSize, BATCH)) {
            if (halfInput) {
                try (DeviceBuffer k = TestRows.halfRows(device, keys); DeviceBuffer v = TestRows.halfRows(device, values)) {
                    cache.appendDevice(k, v, true, tokens);
                }
            } else {
                cache.append(keys, values, tokens);
            }
            int firstRow = 0;
            for (int s = 0; s < BATCH; s++) {
                assertEquals(tokens[s] / groupSize, cache.blockCount(s, true));
                for (int block = 0; block < tokens[s] / groupSize; block++) {
                    for (int head = 0; head < HEADS; head++) {
                        int firstToken = firstRow + block * groupSize;
                        expectSame(cpuMatrix(keys, geometry, groupSize, bits, true, firstToken, head),
                                cache.packedMatrix(s, true, block, head), "keys", s, block, head);
                        expectSame(cpuMatrix(values, geometry, groupSize, bits, false, firstToken, head),
                                cache.packedMatrix(s, false, block, head), "values", s, block, head);
                    }
                }
                firstRow += tokens[s];
            }
        }
    }

    /** The reference quantizer on input rows {@code [tokens][heads][D]} rounded to fp16. */
    private static MemorySegment cpuMatrix(float[] rows, KvGeometry geometry, int groupSize, int bits, boolean keys,
                                           int firstToken, int head) {
        int d = geometry.headDim();
        int rowWidth = geometry.rowWidth();
        MemorySegment src = Arena.ofAuto().allocate(2L * groupSize * rowWidth);
        for (int t = 0; t < groupSize; t++) {
            for (int i = 0; i < rowWidth; i++) {
                Fp16.set(src, 2L * (t * rowWidth + i), rows[(firstToken + t) * rowWidth + i]);
            }
        }
        PackedLayout layout = keys ? PackedLayout.keys(BitWidth.of(bits), groupSize, d)
                : PackedLayout.values(BitWidth.of(bits), groupSize, d);
        MemorySegment dst = Arena.ofAuto().allocate(layout.bytes());
        long headOffset = 2L * head * d;
        if (keys) {
            ScalarGroupQuantizer.INSTANCE.quantize(src, headOffset, rowWidth, 1, layout, dst, 0,
                    MatrixOrigin.keys(0, head, firstToken));
        } else {
            ScalarGroupQuantizer.INSTANCE.quantize(src, headOffset, 1, rowWidth, layout, dst, 0,
                    MatrixOrigin.values(0, head, firstToken));
        }
        return dst;
    }

    private static void expectSame(MemorySegment cpu, MemorySegment gpu, String stream, int sequence, int block, int head) {
        assertEquals(cpu.byteSize(), gpu.byteSize());
        long mismatch = cpu.mismatch(gpu);
        if (mismatch >= 0) {
            fail(stream + " of sequence " + sequence + ", block " + block + ", head " + head + ": first differing byte "
                    + mismatch + " of " + cpu.byteSize() + ": CPU " + hex(cpu, mismatch) + ", GPU " + hex(gpu, mismatch));
        }
    }

    private static String hex(MemorySegment segment, long at) {
        long from = at & ~3L;
        return HexFormat.of().formatHex(segment.asSlice(from, Math.min(8, segment.byteSize() - from)).toArray(
                java.lang.foreign.ValueLayout.JAVA_BYTE));
    }
}
