package io.kvmix.examples.bench;

import io.kvmix.core.parallel.Parallel;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.llama.LlamaModel;
import io.kvmix.models.llama.LlamaState;
import io.kvmix.core.quant.Fp16Vectors;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
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
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import static io.kvmix.core.quant.Fp16Vectors.F;
import static io.kvmix.core.quant.Fp16Vectors.LANES;

/**
 * Decode speed: one new token through a whole model (all layers, the KV cache, the LM head).
 * {@code bundled}: the bundled tiny Llama with an fp16 cache vs a uniform 2-bit plan, after a 256-token prompt.
 * {@code oneBillion}: a TinyLlama-1.1B-shaped model with random fp16 weights (2.2 GB streamed per token),
 * next to {@code memoryRead}, a Vector API pass over 2 GiB on the same threads: weight bytes per second
 * during decode vs the machine's read bandwidth, measured the same way in the same run.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
public class DecodeBench {
    static final int PROMPT = 256;

    /** The bundled model directory, found from the working directory up. */
    static Path bundledModel() {
        Path dir = Path.of("").toAbsolutePath();
        while (dir != null) {
            Path candidate = dir.resolve("src-test-data/models/tiny-llama-gqa");
            if (Files.isDirectory(candidate)) {
                return candidate;
            }
            dir = dir.getParent();
        }
        throw new IllegalStateException("src-test-data/models/tiny-llama-gqa not found from " + Path.of("").toAbsolutePath());
    }

    @State(Scope.Benchmark)
    public static class Bundled {
        @Param({"fp16", "2"})
        public String cache;

        LlamaModel model;
        QuantPlan plan;
        LlamaState state;
        int next;

        @Setup(Level.Trial)
        public void load() {
            model = LlamaModel.load(bundledModel());
            plan = cache.equals("fp16") ? null
                    : QuantPlan.uniform(model.config().numHiddenLayers(), Integer.parseInt(cache), Integer.parseInt(cache), 32);
        }

        /** A fresh sequence with a prompt, so that an iteration never reaches the context limit. */
        @Setup(Level.Iteration)
        public void prompt() {
            state = model.newState(plan);
            int[] prompt = new int[PROMPT];
            for (int i = 0; i < PROMPT; i++) {
                prompt[i] = 100 + i;
            }
            model.forward(state, prompt, false);
            next = 7;
        }

        @TearDown(Level.Iteration)
        public void closeState() {
            state.close();
        }

        @TearDown(Level.Trial)
        public void close() {
            model.close();
        }
    }

    @Benchmark
    public float[] bundled(Bundled s) {
        float[] logits = s.model.forward(s.state, new int[]{s.next}, false);
        s.next = (s.next * 31 + 11) % 1000 + 100;
        return logits;
    }

    /** Where the 1.1B-class random model is written (once; later runs reuse it). */
    static Path oneBillionDir() {
        return RandomModel.oneBillion(Path.of(System.getProperty("java.io.tmpdir"), "kvmix-bench-1b"));
    }

    /** Weight bytes one decode step of the 1.1B-class model reads. */
    static long oneBillionWeightBytes() {
        try (LlamaModel model = LlamaModel.load(oneBillionDir())) {
            return model.decodeWeightBytes();
        }
    }

    @State(Scope.Benchmark)
    public static class OneBillion {
        LlamaModel model;
        LlamaState state;
        /** Bytes of every weight matrix a decode step reads (all layers + LM head). */
        long weightBytes;

        @Setup(Level.Trial)
        public void load() {
            model = LlamaModel.load(oneBillionDir());
            weightBytes = model.decodeWeightBytes();
            System.err.println("1B-class model: " + weightBytes + " weight bytes per decode step");
        }

        @Setup(Level.Iteration)
        public void prompt() {
            state = model.newState(null);
            model.forward(state, new int[]{1, 450, 4996, 17354}, false);
        }

        @TearDown(Level.Iteration)
        public void closeState() {
            state.close();
        }

        @TearDown(Level.Trial)
        public void close() {
            model.close();
        }
    }

    @Benchmark
    public float[] oneBillion(OneBillion s) {
        return s.model.forward(s.state, new int[]{1000}, false);
    }

    @State(Scope.Benchmark)
    public static class Memory {
        static final long BYTES = 2L << 30;
        Arena arena;
        MemorySegment data;

        @Setup(Level.Trial)
        public void allocate() {
            arena = Arena.ofShared();
            data = arena.allocate(BYTES, 64);
            for (long i = 0; i < BYTES; i += 4) {
                data.set(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, i, (i >> 2) % 7);
            }
        }

        @TearDown(Level.Trial)
        public void free() {
            arena.close();
        }
    }

    /** Sums 2 GiB with FloatVector loads on all cores: the read bandwidth the decode figure is compared with. */
    @Benchmark
    public float memoryRead(Memory s) {
        int chunks = 1024;
        long chunkBytes = Memory.BYTES / chunks;
        float[] partial = new float[chunks];
        Parallel.forRange(chunks, (from, to) -> {
            for (int c = from; c < to; c++) {
                FloatVector a0 = FloatVector.zero(F);
                FloatVector a1 = FloatVector.zero(F);
                long base = c * chunkBytes;
                for (long i = 0; i < chunkBytes; i += 8L * LANES) {
                    a0 = a0.add(FloatVector.fromMemorySegment(F, s.data, base + i, ByteOrder.LITTLE_ENDIAN));
                    a1 = a1.add(FloatVector.fromMemorySegment(F, s.data, base + i + 4L * LANES, ByteOrder.LITTLE_ENDIAN));
                }
                partial[c] = Fp16Vectors.sum(a0.add(a1));
            }
        });
        float sum = 0;
        for (float p : partial) {
            sum += p;
        }
        return sum;
    }
}
