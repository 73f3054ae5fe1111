package io.kvmix.examples.cli;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.eval.DecodePerplexity;
import io.kvmix.models.generation.Generator;
import io.kvmix.models.generation.SamplingOptions;
import io.kvmix.models.llama.LlamaModel;
import io.kvmix.models.tokenizer.TextTokenizer;
import io.kvmix.profiler.CalibrationPrompts;
import io.kvmix.profiler.ImportanceProfiler;
import io.kvmix.profiler.PlanBaselines;
import io.kvmix.profiler.ProfileResult;
import io.kvmix.profiler.allocation.Allocation;
import io.kvmix.profiler.allocation.AllocationRule;
import io.kvmix.profiler.allocation.BudgetRule;
import io.kvmix.profiler.allocation.TiersRule;
import io.kvmix.profiler.chart.ImportanceChart;
import me.tongfei.progressbar.ProgressBar;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

/**
 * The project's main job on the bundled model: profile, write the plan and its chart, then compare
 * the fp16 cache with the plan (bytes, decode perplexity, speed, a greedy generation) and with the
 * same bits moved to the least important and to random layers.
 */
@Command(name = "demo", mixinStandardHelpOptions = true,
        description = "Profile the bundled model, then compare its fp16 cache with the KVmix plan (report in --out-dir).")
public final class DemoCommand implements Callable<Integer> {
    /** Repository root, set by the ./kvmix launcher; the bundled model and text are found under it. */
    private static final Path HOME = Path.of(System.getProperty("kvmix.home", "."));

    @Option(names = "--model", paramLabel = "DIR", description = "Model directory (default: the bundled tiny Llama).")
    Path model = HOME.resolve("src-test-data/models/tiny-llama-gqa");

    @Option(names = "--text", paramLabel = "FILE", description = "Held-out text (default: the bundled Brown documents).")
    Path text = HOME.resolve("src-test-data/data/heldout.txt");

    @Option(names = "--out-dir", paramLabel = "DIR", defaultValue = "kvmix-demo",
            description = "Where report.md, plan.json and importance.png go (default ${DEFAULT-VALUE}).")
    Path outDir;

    @Option(names = "--windows", paramLabel = "N", defaultValue = "8",
            description = "Perplexity windows, taken from the start of the text (default ${DEFAULT-VALUE}).")
    int windows;

    @Option(names = "--window", paramLabel = "T", defaultValue = "512", description = "Tokens per window (default ${DEFAULT-VALUE}).")
    int window;

    @Option(names = "--prefill", paramLabel = "P", defaultValue = "64", description = "Prefilled tokens per window (default ${DEFAULT-VALUE}).")
    int prefill;

    @Option(names = "--prompts", paramLabel = "N", defaultValue = "4",
            description = "Calibration prompts, cut from the text after the windows (default ${DEFAULT-VALUE}).")
    int prompts;

    @Option(names = "--max-len", paramLabel = "L", defaultValue = "512", description = "Tokens per calibration prompt (default ${DEFAULT-VALUE}).")
    int maxLength;

    @Option(names = "--budget", paramLabel = "K,V",
            description = "Allocate with the budget rule at these average code bits (metadata not counted) instead of tiers.")
    String budget;

    @Option(names = "--random-baselines", paramLabel = "N", defaultValue = "3",
            description = "Plans with the same bits on random layers (seeds 1..N; default ${DEFAULT-VALUE}, 0 for none).")
    int randomBaselines;

    @Option(names = "--prompt", paramLabel = "TEXT", defaultValue = "The jury said",
            description = "Prompt of the greedy generations (default \"${DEFAULT-VALUE}\").")
    String prompt;

    @Option(names = "--generate", paramLabel = "N", defaultValue = "40", description = "Tokens to generate (default ${DEFAULT-VALUE}).")
    int generateTokens;

    @Option(names = "--json", description = "Print one JSON object on stdout instead of the table.")
    boolean json;

    @Spec
    CommandSpec spec;

    /** One cache configuration's decode-perplexity run. */
    record CacheRun(String name, QuantPlan plan, DecodePerplexity.Result result, double seconds) {
        double tokensPerSecond() {
            return result.predictions() / seconds;
        }
    }

    /** What the calibration and evaluation used, for the report. */
    record Split(List<int[]> evalWindows, List<int[]> calibration, int calibrationStart) {
    }

    @Override
    public Integer call() throws IOException {
        PrintWriter err = spec.commandLine().getErr();
        long start = System.nanoTime();
        AllocationRule rule = allocationRule();
        Files.createDirectories(outDir);
        Split split = split();

        ProfileResult profile;
        int headDim;
        try (ImportanceProfiler profiler = ImportanceProfiler.open(model)) {
            profile = ProfileCommand.profile(profiler, split.calibration(), maxLength, err);
            headDim = profiler.config().headDim();
        }
        Allocation allocation = rule.allocate(profile.importance(), QuantPlan.DEFAULT_GROUP_SIZE,
                headDim, ProfileCommand.modelName(model));
        QuantPlan plan = allocation.plan();
        Path planFile = outDir.resolve("plan.json");
        Path chartFile = outDir.resolve("importance.png");
        ProfileCommand.writePlan(plan, planFile, false);
        ImportanceChart.writePng(profile.importance(), plan, ProfileCommand.chartTitle(model, rule), chartFile);

        List<CacheRun> runs = new ArrayList<>();
        String fp16Text;
        String planText;
        int[] fp16Tokens;
        int[] planTokens;
        try (LlamaModel llama = LlamaModel.load(model); TextTokenizer tokenizer = TextTokenizer.open(model)) {
            int[] promptIds = tokenizer.encodePrompt(prompt);
            warmUp(llama, plan, promptIds);
            runs.add(perplexity(llama, "fp16 cache", null, split.evalWindows(), err));
            runs.add(perplexity(llama, "KVmix plan (" + plan.rule() + ")", plan, split.evalWindows(), err));
            runs.add(perplexity(llama, "same bits, least important layers", PlanBaselines.leastImportant(plan),
                    split.evalWindows(), err));
            for (int seed = 1; seed <= randomBaselines; seed++) {
                runs.add(perplexity(llama, "same bits, random layers (seed " + seed + ")",
                        PlanBaselines.random(plan, seed), split.evalWindows(), err));
            }
            SamplingOptions greedy = SamplingOptions.greedy(generateTokens);
            fp16Tokens = Generator.generate(llama, null, promptIds, greedy, null).newTokens();
            planTokens = Generator.generate(llama, plan, promptIds, greedy, null).newTokens();
            fp16Text = tokenizer.decode(fp16Tokens);
            planText = tokenizer.decode(planTokens);
        }
        double seconds = (System.nanoTime() - start) / 1e9;

        String command = "./kvmix " + String.join(" ", spec.commandLine().getParseResult().originalArgs());
        DemoReport report = new DemoReport(command, model, text, split, profile, allocation, headDim, runs, prompt,
                fp16Text, planText, commonPrefix(fp16Tokens, planTokens), fp16Tokens.length, seconds, window, prefill);
        Path reportFile = outDir.resolve("report.md");
        Files.writeString(reportFile, report.markdown());
        PrintWriter out = spec.commandLine().getOut();
        if (json) {
            JsonOutput.print(out, toJson(report, planFile, chartFile, reportFile));
        } else {
            out.print(report.console());
            out.printf("wrote %s, %s, %s%n", reportFile, planFile, chartFile);
            out.flush();
        }
        return 0;
    }

    private AllocationRule allocationRule() {
        if (budget == null) {
            return TiersRule.reference();
        }
        String[] targets = budget.split(",", -1);
        IllegalArgumentException malformed = new IllegalArgumentException(
                "--budget " + budget + ": expected average key and value code bits K,V (e.g. 1.5,1.5)");
        if (targets.length != 2) {
            throw malformed;
        }
        try {
            return new BudgetRule(Double.parseDouble(targets[0].strip()), Double.parseDouble(targets[1].strip()), false,
                    BudgetRule.DEFAULT_FLOOR_BITS, BudgetRule.DEFAULT_CEILING_BITS);
        } catch (NumberFormatException e) {
            throw malformed;
        }
    }

    /** Evaluation windows from the start of the text; calibration prompts from the tokens after them. */
    private Split split() {
        if (windows < 1 || prompts < 1) {
            throw new IllegalArgumentException("--windows and --prompts must be >= 1");
        }
        if (window <= prefill) {
            throw new IllegalArgumentException("--window " + window + " must be larger than --prefill " + prefill);
        }
        int[] ids;
        try (TextTokenizer tokenizer = TextTokenizer.open(model)) {
            ids = tokenizer.encodeText(Files.readString(text));
        } catch (IOException e) {
            throw new UncheckedIOException(text + ": " + e.getMessage(), e);
        }
        int evalTokens = windows * window;
        if (ids.length < evalTokens + 2) {
            throw new IllegalArgumentException(text + ": " + ids.length + " tokens; " + windows + " windows of "
                    + window + " plus calibration text need more than " + (evalTokens + 2));
        }
        List<int[]> evalWindows = new ArrayList<>();
        for (int w = 0; w < windows; w++) {
            evalWindows.add(Arrays.copyOfRange(ids, w * window, (w + 1) * window));
        }
        List<int[]> calibration = CalibrationPrompts.first(CalibrationPrompts.split(
                Arrays.copyOfRange(ids, evalTokens, ids.length), maxLength, text.toString()), prompts);
        return new Split(evalWindows, calibration, evalTokens);
    }

    /** Brings the JIT to steady state on both cache kinds, so the first timed run is not penalized. */
    private static void warmUp(LlamaModel llama, QuantPlan plan, int[] promptIds) {
        SamplingOptions shortRun = SamplingOptions.greedy(48);
        Generator.generate(llama, null, promptIds, shortRun, null);
        Generator.generate(llama, plan, promptIds, shortRun, null);
    }

    private CacheRun perplexity(LlamaModel llama, String name, QuantPlan plan, List<int[]> evalWindows, PrintWriter err) {
        try (ProgressBar bar = ProgressBars.open(err, String.format(Locale.ROOT, "%-34s", name), evalWindows.size(), "windows")) {
            long start = System.nanoTime();
            DecodePerplexity.Result result = DecodePerplexity.evaluate(llama, plan, evalWindows, prefill, w -> bar.stepTo(w + 1));
            return new CacheRun(name, plan, result, (System.nanoTime() - start) / 1e9);
        }
    }

    private static int commonPrefix(int[] a, int[] b) {
        int n = 0;
        while (n < a.length && n < b.length && a[n] == b[n]) {
            n++;
        }
        return n;
    }

    private ObjectNode toJson(DemoReport report, Path planFile, Path chartFile, Path reportFile) {
        ObjectNode node = JsonOutput.object();
        node.put("model", model.toString());
        node.put("report", reportFile.toString());
        node.put("plan_file", planFile.toString());
        node.put("chart", chartFile.toString());
        node.put("seconds", report.seconds());
        CacheRun fp16 = report.runs().getFirst();
        ArrayNode caches = node.putArray("caches");
        for (CacheRun run : report.runs()) {
            ObjectNode entry = caches.addObject();
            entry.put("name", run.name());
            entry.put("avg_k_bits", run.plan() == null ? 16 : run.plan().averageKeyBits());
            entry.put("avg_v_bits", run.plan() == null ? 16 : run.plan().averageValueBits());
            entry.put("kv_bytes", run.result().kvBytes().total());
            entry.put("compression", (double) fp16.result().kvBytes().total() / run.result().kvBytes().total());
            entry.put("ppl", run.result().perplexity());
            entry.put("ppl_ratio", run.result().perplexity() / fp16.result().perplexity());
            entry.put("decode_tokens_per_second", run.tokensPerSecond());
        }
        node.put("generation_prompt", prompt);
        node.put("generation_fp16", report.fp16Text());
        node.put("generation_plan", report.planText());
        node.put("generation_common_prefix_tokens", report.commonPrefixTokens());
        return node;
    }
}
