package io.kvmix.examples.cli;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.core.cache.KvBytes;
import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.cache.LayerKvCache;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.config.ModelConfig;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.stream.IntStream;

/**
 * Drives real {@link LayerKvCache}s (random keys and values) through a prefill and single-token decode
 * steps for every layer and sequence of a batch, and reports their exact live bytes next to fp16 caches
 * driven with the same tokens. A simulation: it never enforces {@code max_position_embeddings}.
 */
@Command(name = "memory", mixinStandardHelpOptions = true,
        description = "Measure the KV-cache bytes of a plan on a model shape (real caches, random keys/values).")
public final class MemoryCommand implements Callable<Integer> {

    static final class ModelSource {
        @Option(names = "--config", paramLabel = "FILE", description = "A Hugging Face config.json.")
        Path config;

        @Option(names = "--model", paramLabel = "DIR", description = "A model directory holding config.json.")
        Path model;

        Path path() {
            return config != null ? config : model;
        }
    }

    @ArgGroup(exclusive = true, multiplicity = "1")
    ModelSource source;

    @Mixin
    PlanOptions planOptions;

    @Option(names = "--window", paramLabel = "R", description = "Same as --residual-window R.")
    Integer window;

    @Option(names = "--prefill", paramLabel = "N", defaultValue = "4096", description = "Prompt tokens (default ${DEFAULT-VALUE}).")
    int prefill;

    @Option(names = "--decode", paramLabel = "M", defaultValue = "0", description = "Single-token decode steps after the prompt (default ${DEFAULT-VALUE}).")
    int decode;

    @Option(names = "--batch", paramLabel = "B", defaultValue = "1", description = "Sequences (default ${DEFAULT-VALUE}).")
    int batch;

    @Option(names = "--seed", defaultValue = "1", description = "Seed of the random keys/values (default ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--json", description = "Print one JSON object on stdout.")
    boolean json;

    @Spec
    CommandSpec spec;

    /** Bytes of one layer of one sequence, quantized and fp16. */
    record LayerBytes(KvBytes quantized, KvBytes fp16) {
    }

    @Override
    public Integer call() {
        if (prefill < 1 || decode < 0 || batch < 1) {
            throw new IllegalArgumentException("--prefill must be >= 1, --decode >= 0, --batch >= 1 (got "
                    + prefill + ", " + decode + ", " + batch + ")");
        }
        ModelConfig config = ModelConfig.read(source.path());
        planOptions.residualWindow(window, "--window");
        QuantPlan plan = planOptions.resolve(config.numHiddenLayers(), config.headDim());
        int tokens = prefill + decode;
        KvGeometry geometry = new KvGeometry(config.numKeyValueHeads(), config.headDim(), tokens,
                config.slidingWindow().orElse(0));

        LayerBytes total = IntStream.range(0, config.numHiddenLayers() * batch).parallel()
                .mapToObj(task -> driveLayer(geometry, plan, task / batch, task % batch))
                .reduce(new LayerBytes(KvBytes.ZERO, KvBytes.ZERO),
                        (a, b) -> new LayerBytes(a.quantized.plus(b.quantized), a.fp16.plus(b.fp16)));
        report(config, plan, geometry, tokens, total);
        return 0;
    }

    private LayerBytes driveLayer(KvGeometry geometry, QuantPlan plan, int layer, int sequence) {
        SplittableRandom random = new SplittableRandom(seed * 1_000_003L + layer * 7919L + sequence);
        int width = geometry.rowWidth();
        try (LayerKvCache fp16 = LayerKvCache.fullPrecision(geometry, layer);
             LayerKvCache quantized = plan == null ? null
                     : LayerKvCache.quantized(geometry, layer, plan.layer(layer), plan.groupSize())) {
            float[] keys = randomRows(random, prefill * width);
            float[] values = randomRows(random, prefill * width);
            fp16.append(keys, 0, values, 0, prefill);
            if (quantized != null) {
                quantized.append(keys, 0, values, 0, prefill);
            }
            for (int step = 0; step < decode; step++) {
                float[] k = randomRows(random, width);
                float[] v = randomRows(random, width);
                fp16.append(k, 0, v, 0, 1);
                if (quantized != null) {
                    quantized.append(k, 0, v, 0, 1);
                }
            }
            return new LayerBytes(quantized == null ? fp16.bytes() : quantized.bytes(), fp16.bytes());
        }
    }

    /** Keys/values with a spread like real ones: unit noise plus a few large channels. */
    private static float[] randomRows(SplittableRandom random, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) (random.nextDouble() * 2 - 1) * ((i & 63) == 0 ? 8f : 1f);
        }
        return x;
    }

    private void report(ModelConfig config, QuantPlan plan, KvGeometry geometry, int tokens, LayerBytes total) {
        KvBytes kv = total.quantized;
        long fp16Bytes = total.fp16.total();
        double compression = (double) fp16Bytes / kv.total();
        int headDim = config.headDim();
        double avgK = plan == null ? 16 : plan.averageKeyBits();
        double avgV = plan == null ? 16 : plan.averageValueBits();
        double avgKMeta = plan == null ? 16 : plan.averageKeyBitsWithMetadata();
        double avgVMeta = plan == null ? 16 : plan.averageValueBitsWithMetadata(headDim);
        long elements = 2L * config.numHiddenLayers() * batch * tokens * geometry.rowWidth();
        PrintWriter out = spec.commandLine().getOut();
        if (json) {
            ObjectNode result = JsonOutput.object();
            result.put("config", source.path().toString());
            result.put("layers", config.numHiddenLayers());
            result.put("kv_heads", config.numKeyValueHeads());
            result.put("head_dim", headDim);
            if (geometry.hasSlidingWindow()) {
                result.put("sliding_window", geometry.slidingWindow());
            } else {
                result.putNull("sliding_window");
            }
            result.put("plan", plan == null ? "fp16" : plan.rule());
            result.put("group_size", plan == null ? 0 : plan.groupSize());
            result.put("batch", batch);
            result.put("prefill", prefill);
            result.put("decode", decode);
            result.put("tokens", tokens);
            result.put("kv_bytes", kv.total());
            result.put("codes_bytes", kv.codes());
            result.put("metadata_bytes", kv.metadata());
            result.put("fp_bytes", kv.fullPrecision());
            result.put("fp16_bytes", fp16Bytes);
            result.put("compression", compression);
            result.put("avg_k_bits", avgK);
            result.put("avg_v_bits", avgV);
            result.put("avg_k_bits_with_metadata", avgKMeta);
            result.put("avg_v_bits_with_metadata", avgVMeta);
            result.put("effective_bits", 8.0 * kv.total() / elements);
            JsonOutput.print(out, result);
            return;
        }
        out.printf("model          %s (%d layers, %d KV heads x %d)%s%n", source.path(), config.numHiddenLayers(),
                config.numKeyValueHeads(), headDim,
                geometry.hasSlidingWindow() ? ", sliding window " + geometry.slidingWindow() : "");
        out.printf("tokens         %d prefill + %d decode, batch %d%n", prefill, decode, batch);
        out.printf("plan           %s%n", plan == null ? "fp16" : String.format("%s, G=%d, avg K %.2f bits, avg V %.2f bits"
                + " (%.2f / %.2f with metadata)", plan.rule(), plan.groupSize(), avgK, avgV, avgKMeta, avgVMeta));
        out.printf("codes          %,d bytes%n", kv.codes());
        out.printf("metadata       %,d bytes%n", kv.metadata());
        out.printf("fp16 buffer    %,d bytes%n", kv.fullPrecision());
        out.printf("kv cache       %,d bytes (%.2f bits per element)%n", kv.total(), 8.0 * kv.total() / elements);
        out.printf("fp16 cache     %,d bytes%n", fp16Bytes);
        out.printf("compression    %.3fx%n", compression);
        out.flush();
    }
}
