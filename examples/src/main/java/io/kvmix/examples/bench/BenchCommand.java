package io.kvmix.examples.bench;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.examples.cli.JsonOutput;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.OptionsBuilder;
import org.openjdk.jmh.runner.options.TimeValue;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.io.IOException;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.Callable;

/**
 * Runs the CPU JMH benchmarks (fused attention vs dense fp32 attention, scalar vs Vector API kernels,
 * quantize/append throughput) and prints the side-by-side table the README quotes. JMH's own progress
 * goes to stderr; the Markdown table (or JSON) to stdout.
 */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = "Run the CPU JMH benchmarks and print the ratio table (takes ~10 minutes; --quick ~3).")
public final class BenchCommand implements Callable<Integer> {

    /** Which benchmarks to run. */
    enum Suite { core, decode, all }

    @Option(names = "--suite", defaultValue = "all",
            description = "core (attention, quantize, append), decode (whole-model decode vs memory bandwidth) or all (default).")
    Suite suite;

    @Option(names = "--quick", description = "Fewer and shorter iterations (noisier).")
    boolean quick;

    @Option(names = "--contexts", split = ",", paramLabel = "N,N,..",
            description = "Attention contexts (default 1024,4096,16384).")
    List<String> contexts = List.of("1024", "4096", "16384");

    @Option(names = "--scalar-contexts", split = ",", paramLabel = "N,N,..",
            description = "Contexts for the (slow) scalar attention reference (default 1024,4096).")
    List<String> scalarContexts = List.of("1024", "4096");

    @Option(names = "--out", paramLabel = "FILE", description = "Also write every measurement as JSON to FILE.")
    Path out;

    @Option(names = "--json", description = "Print the measurements as one JSON object instead of tables.")
    boolean json;

    @Spec
    CommandSpec spec;

    /**
     * One measurement: benchmark method, its parameters, the median seconds per op over the measured
     * iterations (robust to the outlier iterations a shared VM produces), and half the range between the
     * fastest and the slowest iteration.
     */
    record Measurement(String benchmark, Map<String, String> params, double seconds, double errorSeconds) {
        String param(String name) {
            return params.getOrDefault(name, "");
        }

        double micros() {
            return seconds * 1e6;
        }

        double errorMicros() {
            return errorSeconds * 1e6;
        }

        double millis() {
            return seconds * 1e3;
        }

        double errorMillis() {
            return errorSeconds * 1e3;
        }
    }

    @Override
    public Integer call() throws RunnerException, IOException {
        List<Measurement> results = new ArrayList<>();
        PrintStream stdout = System.out;
        System.setOut(System.err); // JMH prints progress on stdout
        try {
            if (suite != Suite.decode) {
                results.addAll(run(options("AttentionBench\\.(denseFp32|fusedVector)$")
                        .param("context", contexts.toArray(String[]::new))));
                results.addAll(run(options("AttentionBench\\.fusedScalar$")
                        .param("context", scalarContexts.toArray(String[]::new))));
                results.addAll(run(options("QuantizeBench\\.")));
            }
            if (suite != Suite.core) {
                results.addAll(run(options("DecodeBench\\.")));
            }
        } finally {
            System.setOut(stdout);
        }
        ObjectNode document = toJson(results);
        if (out != null) {
            Files.writeString(out, JsonOutput.MAPPER.writeValueAsString(document));
        }
        PrintWriter writer = spec.commandLine().getOut();
        if (json) {
            JsonOutput.print(writer, document);
        } else {
            writer.print(markdown(results));
            writer.flush();
        }
        return 0;
    }

    private ChainedOptionsBuilder options(String include) {
        return new OptionsBuilder().include(include)
                .forks(1)
                .warmupIterations(quick ? 2 : 4).warmupTime(TimeValue.milliseconds(quick ? 500 : 1000))
                .measurementIterations(quick ? 3 : 6).measurementTime(TimeValue.milliseconds(quick ? 500 : 1000))
                .jvmArgsAppend("--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                        "-Xmx12g", "-XX:+UseParallelGC");
    }

    private static List<Measurement> run(ChainedOptionsBuilder options) throws RunnerException {
        List<Measurement> results = new ArrayList<>();
        for (RunResult result : new Runner(options.build()).run()) {
            var params = result.getParams();
            Map<String, String> values = new TreeMap<>();
            for (String key : params.getParamsKeys()) {
                values.put(key, params.getParam(key));
            }
            String name = params.getBenchmark();
            double toSeconds = switch (result.getPrimaryResult().getScoreUnit()) {
                case "ms/op" -> 1e-3;
                case "us/op" -> 1e-6;
                case "ns/op" -> 1e-9;
                case "s/op" -> 1;
                default -> throw new IllegalStateException("unexpected unit " + result.getPrimaryResult().getScoreUnit());
            };
            double[] iterations = result.getBenchmarkResults().stream()
                    .flatMap(b -> b.getIterationResults().stream())
                    .mapToDouble(i -> i.getPrimaryResult().getScore() * toSeconds).sorted().toArray();
            int n = iterations.length;
            double median = n % 2 == 1 ? iterations[n / 2] : (iterations[n / 2 - 1] + iterations[n / 2]) / 2;
            results.add(new Measurement(name.substring(name.lastIndexOf('.', name.lastIndexOf('.') - 1) + 1), values,
                    median, (iterations[n - 1] - iterations[0]) / 2));
        }
        return results;
    }

    private ObjectNode toJson(List<Measurement> results) {
        ObjectNode document = JsonOutput.object();
        document.put("cores", Runtime.getRuntime().availableProcessors());
        document.put("vector_lanes", io.kvmix.core.quant.Fp16Vectors.LANES);
        document.put("java", System.getProperty("java.version"));
        ArrayNode list = document.putArray("measurements");
        for (Measurement m : results) {
            ObjectNode node = list.addObject();
            node.put("benchmark", m.benchmark());
            m.params().forEach(node::put);
            node.put("median_seconds_per_op", m.seconds());
            node.put("half_range_seconds", m.errorSeconds());
        }
        return document;
    }

    private static Measurement find(List<Measurement> results, String benchmark, String... params) {
        outer:
        for (Measurement m : results) {
            if (!m.benchmark().equals(benchmark)) {
                continue;
            }
            for (int i = 0; i < params.length; i += 2) {
                if (!m.param(params[i]).equals(params[i + 1])) {
                    continue outer;
                }
            }
            return m;
        }
        return null;
    }

    private static String cell(Measurement m) {
        return m == null ? "-" : String.format(Locale.ROOT, "%.0f ± %.0f", m.micros(), m.errorMicros());
    }

    private static String ratio(Measurement slow, Measurement fast) {
        return slow == null || fast == null ? "-" : String.format(Locale.ROOT, "%.2fx", slow.micros() / fast.micros());
    }

    static String markdown(List<Measurement> results) {
        StringBuilder md = new StringBuilder();
        md.append("Decode attention, 32 heads x 128, 1 query token (us per call: median of the measured iterations"
                + " ± half their range):\n\n");
        md.append("| context | dense fp32 | fused fp16 cache | fused 2-bit | fused 3-bit | fused 4-bit | 2-bit vs fp32 | 3-bit vs fp32 | 4-bit vs fp32 |\n");
        md.append("|---|---|---|---|---|---|---|---|---|\n");
        for (String context : contexts(results)) {
            Measurement dense = find(results, "AttentionBench.denseFp32", "context", context);
            Measurement fp16 = find(results, "AttentionBench.fusedVector", "context", context, "cache", "fp16");
            Measurement b2 = find(results, "AttentionBench.fusedVector", "context", context, "cache", "2");
            Measurement b3 = find(results, "AttentionBench.fusedVector", "context", context, "cache", "3");
            Measurement b4 = find(results, "AttentionBench.fusedVector", "context", context, "cache", "4");
            md.append("| ").append(context).append(" | ").append(cell(dense)).append(" | ").append(cell(fp16))
                    .append(" | ").append(cell(b2)).append(" | ").append(cell(b3)).append(" | ").append(cell(b4))
                    .append(" | ").append(ratio(dense, b2)).append(" | ").append(ratio(dense, b3))
                    .append(" | ").append(ratio(dense, b4)).append(" |\n");
        }
        md.append("\nVector API kernels vs their scalar references (us per call; speedup = scalar / vector):\n\n");
        md.append("| kernel | shape | scalar | vector | speedup |\n|---|---|---|---|---|\n");
        for (Measurement scalar : results) {
            if (scalar.benchmark().equals("AttentionBench.fusedScalar")) {
                Measurement vector = find(results, "AttentionBench.fusedVector", "context", scalar.param("context"),
                        "cache", scalar.param("cache"));
                md.append("| fused attention, ").append(label(scalar.param("cache"))).append(" | context ")
                        .append(scalar.param("context")).append(" | ").append(cell(scalar)).append(" | ")
                        .append(cell(vector)).append(" | ").append(ratio(scalar, vector)).append(" |\n");
            }
        }
        for (Measurement scalar : results) {
            if (scalar.benchmark().equals("QuantizeBench.quantizeBlock") && scalar.param("impl").equals("scalar")) {
                Measurement vector = find(results, "QuantizeBench.quantizeBlock", "bits", scalar.param("bits"),
                        "impl", "vector");
                md.append("| quantize+pack K and V, ").append(scalar.param("bits")).append("-bit | 32 tokens x 32 heads x 128 | ")
                        .append(cell(scalar)).append(" | ").append(cell(vector)).append(" | ")
                        .append(ratio(scalar, vector)).append(" |\n");
            }
        }
        Measurement fp16 = find(results, "DecodeBench.bundled", "cache", "fp16");
        Measurement twoBit = find(results, "DecodeBench.bundled", "cache", "2");
        Measurement big = find(results, "DecodeBench.oneBillion");
        Measurement read = find(results, "DecodeBench.memoryRead");
        if (fp16 != null || big != null) {
            md.append("\nWhole-model decode (one token, all layers, cache and LM head):\n\n");
            md.append("| model | cache | ms per token | tokens/s |\n|---|---|---|---|\n");
            for (Measurement m : new Measurement[]{fp16, twoBit}) {
                if (m != null) {
                    md.append("| bundled tiny-llama-gqa (12 layers, 256 wide), 256-token prompt | ")
                            .append(label(m.param("cache"))).append(" | ")
                            .append(String.format(Locale.ROOT, "%.2f ± %.2f", m.millis(), m.errorMillis()))
                            .append(" | ").append(String.format(Locale.ROOT, "%.1f", 1 / m.seconds())).append(" |\n");
                }
            }
            if (big != null) {
                md.append("| 1.1B-class random fp16 weights (TinyLlama shape) | fp16 | ")
                        .append(String.format(Locale.ROOT, "%.1f ± %.1f", big.millis(), big.errorMillis())).append(" | ")
                        .append(String.format(Locale.ROOT, "%.2f", 1 / big.seconds())).append(" |\n");
            }
            if (big != null && read != null) {
                double weightGbPerSecond = DecodeBench.oneBillionWeightBytes() / big.seconds() / 1e9;
                double readGbPerSecond = DecodeBench.Memory.BYTES / read.seconds() / 1e9;
                md.append(String.format(Locale.ROOT, "%nWeight bytes streamed during 1.1B decode: %.2f GB/s; "
                                + "Vector API read of 2 GiB on the same threads: %.2f GB/s; ratio %.0f%%.%n",
                        weightGbPerSecond, readGbPerSecond, 100 * weightGbPerSecond / readGbPerSecond));
            }
        }
        md.append("\nAppend throughput, 32 KV heads x 128 (one layer, one thread):\n\n");
        md.append("| cache | prefill 4096 tokens | tokens/s | 256 decode appends | us per token |\n|---|---|---|---|---|\n");
        for (String cache : List.of("fp16", "2", "4")) {
            Measurement prefill = find(results, "QuantizeBench.appendPrefill", "cache", cache);
            Measurement decode = find(results, "QuantizeBench.appendDecode", "cache", cache);
            md.append("| ").append(label(cache)).append(" | ").append(cell(prefill)).append(" us | ")
                    .append(prefill == null ? "-" : String.format(Locale.ROOT, "%,.0f", 4096 / prefill.seconds()))
                    .append(" | ").append(cell(decode)).append(" us | ")
                    .append(decode == null ? "-" : String.format(Locale.ROOT, "%.2f", decode.micros() / 256))
                    .append(" |\n");
        }
        return md.toString();
    }

    private static String label(String cache) {
        return cache.equals("fp16") ? "fp16" : cache + "-bit";
    }

    private static List<String> contexts(List<Measurement> results) {
        return results.stream().filter(m -> m.benchmark().equals("AttentionBench.denseFp32"))
                .map(m -> m.param("context")).distinct()
                .sorted((a, b) -> Integer.compare(Integer.parseInt(a), Integer.parseInt(b))).toList();
    }
}
