package io.kvmix.examples.bench;

import io.kvmix.core.attention.DenseAttention;
import io.kvmix.core.attention.FusedAttention;
import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.cache.LayerKvCache;
import io.kvmix.core.plan.LayerQuant;
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

import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;

/**
 * Decode attention of one query token, Llama-2-7B attention shape (32 heads x 128), over a context of
 * {@code context} tokens: dense fp32 (the best Vector API baseline) vs the fused kernels over an fp16
 * cache and over packed 2/3/4-bit caches (reference residual ratios, one decode step after the prompt).
 * All kernels run on the common fork-join pool, i.e. on every core.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
public class AttentionBench {
    static final int HEADS = 32;
    static final int HEAD_DIM = 128;
    static final float SCALE = (float) (1 / Math.sqrt(HEAD_DIM));

    /** Keys/values with unit noise and a few outlier channels, as post-RoPE keys have. */
    static float[] rows(SplittableRandom random, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) (random.nextDouble() * 2 - 1) * ((i % 61) == 0 ? 6f : 1f);
        }
        return x;
    }

    @State(Scope.Benchmark)
    public static class Dense {
        @Param({"1024", "4096", "16384"})
        public int context;

        float[] keys;
        float[] values;
        float[] q;
        float[] out;

        @Setup(Level.Trial)
        public void setUp() {
            SplittableRandom random = new SplittableRandom(1);
            keys = rows(random, context * HEADS * HEAD_DIM);   // [heads][context][128]
            values = rows(random, context * HEADS * HEAD_DIM);
            q = rows(random, HEADS * HEAD_DIM);
            out = new float[HEADS * HEAD_DIM];
        }
    }

    @State(Scope.Benchmark)
    public static class Cache {
        @Param({"1024", "4096", "16384"})
        public int context;

        /** "fp16" for a full-precision cache, else uniform K=V bits. */
        @Param({"fp16", "2", "3", "4"})
        public String cache;

        LayerKvCache layer;
        float[] q;
        float[] out;

        @Setup(Level.Trial)
        public void setUp() {
            SplittableRandom random = new SplittableRandom(2);
            KvGeometry geometry = new KvGeometry(HEADS, HEAD_DIM, context + 1, 0);
            layer = cache.equals("fp16") ? LayerKvCache.fullPrecision(geometry, 0)
                    : LayerKvCache.quantized(geometry, 0, LayerQuant.reference(Integer.parseInt(cache),
                    Integer.parseInt(cache)), 32);
            int width = HEADS * HEAD_DIM;
            int prompt = context - 1;
            layer.append(rows(random, prompt * width), 0, rows(random, prompt * width), 0, prompt);
            layer.append(rows(random, width), 0, rows(random, width), 0, 1);
            q = rows(random, width);
            out = new float[width];
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            layer.close();
        }
    }

    @Benchmark
    public float[] denseFp32(Dense s) {
        DenseAttention.decode(s.q, s.keys, s.values, s.context, HEADS, HEADS, HEAD_DIM, SCALE, s.out);
        return s.out;
    }

    @Benchmark
    public float[] fusedVector(Cache s) {
        FusedAttention.vector().attend(s.layer, s.q, 0, 1, HEADS, SCALE, s.out, 0);
        return s.out;
    }

    @Benchmark
    public float[] fusedScalar(Cache s) {
        FusedAttention.scalar().attend(s.layer, s.q, 0, 1, HEADS, SCALE, s.out, 0);
        return s.out;
    }
}
