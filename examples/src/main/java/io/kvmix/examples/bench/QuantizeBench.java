package io.kvmix.examples.bench;

import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.cache.LayerKvCache;
import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.quant.BitWidth;
import io.kvmix.core.quant.Fp16;
import io.kvmix.core.quant.GroupQuantizer;
import io.kvmix.core.quant.MatrixOrigin;
import io.kvmix.core.quant.PackedLayout;
import io.kvmix.core.quant.ScalarGroupQuantizer;
import io.kvmix.core.quant.VectorGroupQuantizer;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;

/**
 * Quantize+pack and append throughput, Llama-2-7B layer shape (32 KV heads x 128, G = 32).
 * {@code quantizeBlock}: one block (32 tokens) of keys and of values for all heads, one thread.
 * {@code appendPrefill}: a 4096-token prompt into a fresh cache (fp16 rounding + quantizing ~80% of it).
 * {@code appendDecode}: 256 single-token appends after a 1024-token prompt (amortized spills included).
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
public class QuantizeBench {
    static final int HEADS = 32;
    static final int HEAD_DIM = 128;
    static final int G = 32;

    @State(Scope.Thread)
    public static class Block {
        @Param({"1", "2", "3", "4"})
        public int bits;

        @Param({"scalar", "vector"})
        public String impl;

        Arena arena;
        MemorySegment chunk;   // fp16 [heads][G][128]
        MemorySegment packed;
        PackedLayout keys;
        PackedLayout values;
        GroupQuantizer quantizer;

        @Setup(Level.Trial)
        public void setUp() {
            arena = Arena.ofConfined();
            chunk = arena.allocate(2L * HEADS * G * HEAD_DIM);
            float[] rows = AttentionBench.rows(new SplittableRandom(3), HEADS * G * HEAD_DIM);
            for (int i = 0; i < rows.length; i++) {
                Fp16.set(chunk, 2L * i, rows[i]);
            }
            keys = PackedLayout.keys(BitWidth.of(bits), G, HEAD_DIM);
            values = PackedLayout.values(BitWidth.of(bits), G, HEAD_DIM);
            packed = arena.allocate(HEADS * Math.max(keys.bytes(), values.bytes()));
            quantizer = impl.equals("scalar") ? ScalarGroupQuantizer.INSTANCE : VectorGroupQuantizer.INSTANCE;
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            arena.close();
        }
    }

    @Benchmark
    public MemorySegment quantizeBlock(Block s) {
        for (int h = 0; h < HEADS; h++) {
            long src = 2L * h * G * HEAD_DIM;
            s.quantizer.quantize(s.chunk, src, HEAD_DIM, 1, s.keys, s.packed, h * s.keys.bytes(), MatrixOrigin.keys(0, h, 0));
            s.quantizer.quantize(s.chunk, src, 1, HEAD_DIM, s.values, s.packed, h * s.values.bytes(),
                    MatrixOrigin.values(0, h, 0));
        }
        return s.packed;
    }

    @State(Scope.Thread)
    public static class Append {
        @Param({"fp16", "2", "4"})
        public String cache;

        float[] prompt;
        float[] tokens;
        LayerKvCache layer;

        @Setup(Level.Trial)
        public void data() {
            SplittableRandom random = new SplittableRandom(4);
            prompt = AttentionBench.rows(random, 4096 * HEADS * HEAD_DIM);
            tokens = AttentionBench.rows(random, 256 * HEADS * HEAD_DIM);
        }

        LayerKvCache fresh(int capacity) {
            KvGeometry geometry = new KvGeometry(HEADS, HEAD_DIM, capacity, 0);
            return cache.equals("fp16") ? LayerKvCache.fullPrecision(geometry, 0)
                    : LayerKvCache.quantized(geometry, 0, LayerQuant.reference(Integer.parseInt(cache),
                    Integer.parseInt(cache)), G);
        }

        @TearDown(Level.Invocation)
        public void close() {
            if (layer != null) {
                layer.close();
                layer = null;
            }
        }
    }

    /** A cache holding a 1024-token prompt, made fresh before every invocation (not timed). */
    @State(Scope.Thread)
    public static class Decode extends Append {
        @Setup(Level.Invocation)
        public void prompt() {
            layer = fresh(1024 + 256);
            layer.append(prompt, 0, prompt, 0, 1024);
        }
    }

    @Benchmark
    public LayerKvCache appendPrefill(Append s) {
        s.layer = s.fresh(4096);
        s.layer.append(s.prompt, 0, s.prompt, 0, 4096);
        return s.layer;
    }

    @Benchmark
    public LayerKvCache appendDecode(Decode s) {
        int width = HEADS * HEAD_DIM;
        for (int t = 0; t < 256; t++) {
            s.layer.append(s.tokens, t * width, s.tokens, t * width, 1);
        }
        return s.layer;
    }
}
