package io.kvmix.examples.cli;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.core.plan.PlanFiles;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.tokenizer.TextTokenizer;
import io.kvmix.profiler.CalibrationPrompts;
import io.kvmix.profiler.ImportanceProfiler;
import io.kvmix.profiler.ProfileListener;
import io.kvmix.profiler.ProfileResult;
import io.kvmix.profiler.PromptGradients;
import io.kvmix.profiler.allocation.Allocation;
import io.kvmix.profiler.allocation.AllocationRule;
import io.kvmix.profiler.allocation.BudgetRule;
import io.kvmix.profiler.allocation.TierBits;
import io.kvmix.profiler.allocation.TiersRule;
import io.kvmix.profiler.chart.ImportanceChart;
import me.tongfei.progressbar.ProgressBar;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

/** Profiles a model's per-layer key/value importance and turns it into a plan file. */
@Command(name = "profile", mixinStandardHelpOptions = true,
        description = "Per-layer K/V importance (gradient norms, one forward + backward per prompt) and a mixed-precision plan.")
public final class ProfileCommand implements Callable<Integer> {

    static final class Input {
        @Option(names = "--text", paramLabel = "FILE",
                description = "Calibration text, tokenized without special tokens and cut into prompts of --max-len tokens.")
        Path text;

        @Option(names = "--token-ids", paramLabel = "FILE",
                description = "JSON array of arrays of token ids (one prompt each), or a flat array (cut like --text); used verbatim.")
        Path tokenIds;
    }

    /** Which allocation rule, with its knobs. */
    enum Rule { tiers, budget }

    @Option(names = "--model", paramLabel = "DIR", required = true, description = "Model directory (config.json, safetensors, tokenizer.json).")
    Path model;

    @ArgGroup(exclusive = true, multiplicity = "1")
    Input input;

    @Option(names = "--prompts", paramLabel = "N", description = "Use the first N prompts (default: all).")
    Integer prompts;

    @Option(names = "--max-len", paramLabel = "L", defaultValue = "" + ImportanceProfiler.DEFAULT_MAX_LENGTH,
            description = "Prompt length limit in tokens; longer prompts are truncated (default ${DEFAULT-VALUE}).")
    int maxLength;

    @Option(names = "--rule", defaultValue = "tiers",
            description = "tiers (the reference's: top 10%% / next 10%% of layers get more bits) or budget (meet average bits). Default ${DEFAULT-VALUE}.")
    Rule rule;

    @Option(names = "--k-bits", paramLabel = "X", description = "budget: target average key bits per element.")
    Double keyBits;

    @Option(names = "--v-bits", paramLabel = "Y", description = "budget: target average value bits per element.")
    Double valueBits;

    @Option(names = "--codes-only",
            description = "budget: the targets count code bits only (default: codes plus the fp16 scale and minimum of every group).")
    boolean codesOnly;

    @Option(names = "--important-fraction", paramLabel = "F", defaultValue = "0.1",
            description = "tiers: fraction of layers (rounded down) that are important (default ${DEFAULT-VALUE}).")
    double importantFraction;

    @Option(names = "--general-fraction", paramLabel = "F", defaultValue = "0.1",
            description = "tiers: fraction of layers (rounded down) that are general (default ${DEFAULT-VALUE}).")
    double generalFraction;

    @Option(names = "--tier-k-bits", paramLabel = "I,G,R", defaultValue = "3,3,2",
            description = "tiers: key bits of important, general and remaining layers (default ${DEFAULT-VALUE}).")
    String tierKeyBits;

    @Option(names = "--tier-v-bits", paramLabel = "I,G,R", defaultValue = "4,4,2",
            description = "tiers: value bits of important, general and remaining layers (default ${DEFAULT-VALUE}).")
    String tierValueBits;

    @Option(names = "--group", paramLabel = "G", defaultValue = "" + QuantPlan.DEFAULT_GROUP_SIZE,
            description = "Group size of the plan (a multiple of 32; default ${DEFAULT-VALUE}).")
    int groupSize;

    @Option(names = "--out", paramLabel = "FILE", required = true, description = "Where to write the plan.")
    Path out;

    @Option(names = "--seed-format", description = "Write --out as the reference's quant_bits dict instead of a kvmix plan.")
    boolean seedFormat;

    @Option(names = "--plot", paramLabel = "FILE.png", description = "Also draw the importance per layer with the chosen bits.")
    Path plot;

    @Option(names = "--json", description = "Print one JSON object on stdout.")
    boolean json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws IOException {
        AllocationRule allocationRule = allocationRule();
        PrintWriter err = spec.commandLine().getErr();
        long start = System.nanoTime();
        try (ImportanceProfiler profiler = ImportanceProfiler.open(model)) {
            List<int[]> calibration = CalibrationPrompts.first(calibrationPrompts(), prompts);
            ProfileResult result = profile(profiler, calibration, maxLength, err);
            Allocation allocation = allocationRule.allocate(result.importance(), groupSize,
                    profiler.config().headDim(), modelName(model));
            QuantPlan plan = allocation.plan();
            writePlan(plan, out, seedFormat);
            if (plot != null) {
                ImportanceChart.writePng(result.importance(), plan, chartTitle(model, allocationRule), plot);
            }
            double seconds = (System.nanoTime() - start) / 1e9;
            PrintWriter stdout = spec.commandLine().getOut();
            if (json) {
                JsonOutput.print(stdout, toJson(result, allocation, seconds));
            } else {
                printSummary(stdout, result, allocation, seconds, profiler.config().headDim());
            }
            return 0;
        }
    }

    /** Runs the profiler with a progress bar on {@code err}: one step per prompt. */
    static ProfileResult profile(ImportanceProfiler profiler, List<int[]> prompts, int maxLength, PrintWriter err) {
        try (ProgressBar bar = ProgressBars.open(err, "profile", prompts.size(), "prompts")) {
            return profiler.profile(prompts, maxLength, new ProfileListener() {
                @Override
                public void promptDone(PromptGradients gradients, int done, int total) {
                    bar.stepTo(done);
                    bar.setExtraMessage(String.format(Locale.ROOT, "loss %.3f", gradients.loss()));
                }
            });
        }
    }

    /** The model's directory name: what a plan records as the model it came from. */
    static String modelName(Path modelDir) {
        Path name = modelDir.toAbsolutePath().normalize().getFileName();
        return name == null ? modelDir.toString() : name.toString();
    }

    static String chartTitle(Path modelDir, AllocationRule rule) {
        return "KV importance per layer: " + modelName(modelDir) + " (" + rule.name() + ")";
    }

    /** Writes {@code plan} as a kvmix plan, or as the reference's quant_bits dict. */
    static void writePlan(QuantPlan plan, Path file, boolean referenceFormat) throws IOException {
        Path parent = file.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        if (referenceFormat) {
            PlanFiles.writeReference(plan, file);
        } else {
            PlanFiles.write(plan, file);
        }
    }

    private AllocationRule allocationRule() {
        boolean targets = keyBits != null || valueBits != null;
        return switch (rule) {
            case tiers -> {
                if (targets || codesOnly) {
                    throw new IllegalArgumentException("--k-bits/--v-bits/--codes-only are budget targets: add --rule budget");
                }
                yield new TiersRule(importantFraction, generalFraction,
                        tierBits(tierKeyBits, "--tier-k-bits"), tierBits(tierValueBits, "--tier-v-bits"));
            }
            case budget -> {
                if (keyBits == null || valueBits == null) {
                    throw new IllegalArgumentException("--rule budget needs both --k-bits and --v-bits");
                }
                BudgetRule defaults = BudgetRule.of(keyBits, valueBits);
                yield new BudgetRule(keyBits, valueBits, !codesOnly, defaults.floorBits(), defaults.ceilingBits());
            }
        };
    }

    private static TierBits tierBits(String spec, String flag) {
        String[] parts = spec.split(",", -1);
        if (parts.length != 3) {
            throw new IllegalArgumentException(flag + " " + spec + ": expected three widths I,G,R (e.g. 3,3,2)");
        }
        try {
            return new TierBits(Integer.parseInt(parts[0].strip()), Integer.parseInt(parts[1].strip()),
                    Integer.parseInt(parts[2].strip()));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(flag + " " + spec + ": widths must be integers 1-4");
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(flag + " " + spec + ": " + e.getMessage());
        }
    }

    private List<int[]> calibrationPrompts() {
        if (input.tokenIds != null) {
            List<int[]> sequences = TokenInput.read(input.tokenIds);
            return sequences.size() > 1 ? sequences
                    : CalibrationPrompts.split(sequences.getFirst(), maxLength, input.tokenIds.toString());
        }
        String text;
        try {
            text = Files.readString(input.text);
        } catch (IOException e) {
            throw new UncheckedIOException(input.text + ": " + e.getMessage(), e);
        }
        try (TextTokenizer tokenizer = TextTokenizer.open(model)) {
            return CalibrationPrompts.split(tokenizer.encodeText(text), maxLength, input.text.toString());
        }
    }

    private ObjectNode toJson(ProfileResult result, Allocation allocation, double seconds) {
        ObjectNode node = JsonOutput.object();
        node.put("model", model.toString());
        node.put("prompts", result.prompts().size());
        node.put("forward_passes", result.forwardPasses());
        node.put("backward_passes", result.backwardPasses());
        node.put("mean_loss", result.meanLoss());
        putArray(node.putArray("k_importance"), result.keyImportance());
        putArray(node.putArray("v_importance"), result.valueImportance());
        ArrayNode perPrompt = node.putArray("per_prompt");
        for (PromptGradients prompt : result.prompts()) {
            ObjectNode entry = perPrompt.addObject();
            entry.put("tokens", prompt.tokens());
            entry.put("loss", prompt.loss());
            putArray(entry.putArray("k_norms"), prompt.keyNorms());
            putArray(entry.putArray("v_norms"), prompt.valueNorms());
        }
        ArrayNode notes = node.putArray("notes");
        allocation.notes().forEach(notes::add);
        node.put("out", out.toString());
        node.put("out_format", seedFormat ? "quant_bits" : PlanFiles.FORMAT_NAME);
        if (plot != null) {
            node.put("plot", plot.toString());
        }
        try {
            node.set("plan", JsonOutput.MAPPER.readTree(PlanFiles.toJson(allocation.plan())));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        node.put("seconds", seconds);
        return node;
    }

    private static void putArray(ArrayNode array, double[] values) {
        for (double value : values) {
            array.add(value);
        }
    }

    private void printSummary(PrintWriter stdout, ProfileResult result, Allocation allocation, double seconds,
                              int headDim) {
        QuantPlan plan = allocation.plan();
        stdout.printf(Locale.ROOT, "profiled %d prompt(s) in %.1f s: %d forward + %d backward passes, mean loss %.4f%n",
                result.prompts().size(), seconds, result.forwardPasses(), result.backwardPasses(), result.meanLoss());
        stdout.print(layerTable(result.keyImportance(), result.valueImportance(), plan));
        stdout.printf(Locale.ROOT, "%s: avg K %.2f / V %.2f bits (codes), %.2f / %.2f with metadata%n",
                plan.rule(), plan.averageKeyBits(), plan.averageValueBits(), plan.averageKeyBitsWithMetadata(),
                plan.averageValueBitsWithMetadata(headDim));
        allocation.notes().forEach(note -> stdout.println("note: " + note));
        stdout.printf("plan written to %s (%s)%s%n", out, seedFormat ? "reference quant_bits dict" : "kvmix plan",
                plot == null ? "" : ", chart to " + plot);
        stdout.flush();
    }

    /** One row per layer: importance scores and the chosen widths. */
    static String layerTable(double[] keyImportance, double[] valueImportance, QuantPlan plan) {
        StringBuilder table = new StringBuilder("layer  k_importance  v_importance  K bits  V bits\n");
        for (int layer = 0; layer < plan.layerCount(); layer++) {
            table.append(String.format(Locale.ROOT, "%5d  %12.5g  %12.5g  %6d  %6d%n", layer, keyImportance[layer],
                    valueImportance[layer], plan.layer(layer).keys().bits().bits(),
                    plan.layer(layer).values().bits().bits()));
        }
        return table.toString();
    }
}
