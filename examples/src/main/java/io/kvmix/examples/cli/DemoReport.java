package io.kvmix.examples.cli;

import io.kvmix.core.plan.QuantPlan;
import io.kvmix.profiler.ProfileResult;
import io.kvmix.profiler.allocation.Allocation;

import java.nio.file.Path;
import java.util.List;
import java.util.Locale;

/**
 * The results of {@code ./kvmix demo}, rendered as {@code report.md} and as the console table.
 * The first run is the fp16 cache, the second the profiled plan, the rest its same-bits controls.
 */
record DemoReport(String command, Path model, Path text, DemoCommand.Split split, ProfileResult profile, Allocation allocation,
                  int headDim, List<DemoCommand.CacheRun> runs, String prompt, String fp16Text, String planText,
                  int commonPrefixTokens, int generatedTokens, double seconds, int window, int prefill) {

    private DemoCommand.CacheRun fp16() {
        return runs.getFirst();
    }

    private QuantPlan plan() {
        return allocation.plan();
    }

    String markdown() {
        StringBuilder md = new StringBuilder();
        md.append("# KVmix demo: ").append(ProfileCommand.modelName(model)).append("\n\n");
        md.append(String.format(Locale.ROOT, "`%s` finished in %.0f s on %d cores (Java %s).%n%n",
                command, seconds, Runtime.getRuntime().availableProcessors(), Runtime.version().feature()));
        md.append("## Profile\n\n");
        md.append(String.format(Locale.ROOT,
                "%d calibration prompts of %d tokens (tokens %d..%d of `%s`, after the evaluation windows), "
                        + "%d forward + %d backward passes, mean loss %.4f. Rule `%s` %s.%n%n",
                profile.prompts().size(), split.calibration().getFirst().length, split.calibrationStart(),
                split.calibrationStart() + split.calibration().stream().mapToInt(p -> p.length).sum() - 1,
                text.getFileName(), profile.forwardPasses(), profile.backwardPasses(), profile.meanLoss(),
                plan().rule(), plan().ruleParams()));
        md.append("| layer | key importance | value importance | K bits | V bits |\n|---:|---:|---:|---:|---:|\n");
        double[] keys = profile.keyImportance();
        double[] values = profile.valueImportance();
        for (int layer = 0; layer < plan().layerCount(); layer++) {
            md.append(String.format(Locale.ROOT, "| %d | %.5g | %.5g | %d | %d |%n", layer, keys[layer], values[layer],
                    plan().layer(layer).keys().bits().bits(), plan().layer(layer).values().bits().bits()));
        }
        allocation.notes().forEach(note -> md.append("\nNote: ").append(note).append('\n'));
        md.append("\n![key and value importance per layer](importance.png)\n\n");

        md.append("## fp16 cache vs the KVmix plan\n\n");
        md.append(String.format(Locale.ROOT,
                "Decode perplexity over %d windows of %d tokens (prefill %d, then %d tokens one at a time through the "
                        + "cache); KV bytes are the cache at the end of a window; tokens/s = predictions / wall time "
                        + "of the perplexity run.%n%n",
                split.evalWindows().size(), window, prefill, window - prefill));
        md.append(table(runs.subList(0, 2), true));
        md.append("\n## Greedy generation\n\n");
        md.append("Prompt: \"").append(prompt).append("\"\n\n");
        md.append("- fp16 cache: \"").append(oneLine(fp16Text)).append("\"\n");
        md.append("- KVmix plan: \"").append(oneLine(planText)).append("\"\n\n");
        md.append(String.format(Locale.ROOT, "The first %d of %d generated tokens are identical.%n%n",
                commonPrefixTokens, generatedTokens));
        if (runs.size() > 2) {
            md.append("## Same bits on other layers\n\n");
            md.append("The plan's widths moved to other layers (keys and values each by their own importance): the ")
                    .append("same bytes, so only the choice of layers differs.\n\n");
            md.append(table(runs.subList(1, runs.size()), false));
        }
        return md.toString();
    }

    String console() {
        StringBuilder out = new StringBuilder();
        out.append(String.format(Locale.ROOT, "%nprofile: %d prompts, %d forward + %d backward passes; plan %s: avg K %.2f / V %.2f bits%n",
                profile.prompts().size(), profile.forwardPasses(), profile.backwardPasses(), plan().rule(),
                plan().averageKeyBits(), plan().averageValueBits()));
        out.append(ProfileCommand.layerTable(profile.keyImportance(), profile.valueImportance(), plan()));
        out.append(String.format(Locale.ROOT, "%n%-36s %9s %12s %8s %9s %8s %9s%n", "cache", "K/V bits", "KV bytes",
                "ratio", "ppl", "vs fp16", "tok/s"));
        for (DemoCommand.CacheRun run : runs) {
            out.append(String.format(Locale.ROOT, "%-36s %9s %,12d %7.2fx %9.3f %8.4f %9.0f%n", run.name(), bits(run.plan()),
                    run.result().kvBytes().total(), compression(run), run.result().perplexity(), pplRatio(run),
                    run.tokensPerSecond()));
        }
        out.append(String.format(Locale.ROOT, "%ngreedy from \"%s\" (%d/%d tokens identical)%n  fp16: %s%n  plan: %s%n",
                prompt, commonPrefixTokens, generatedTokens, oneLine(fp16Text), oneLine(planText)));
        out.append(String.format(Locale.ROOT, "%.0f s in all%n", seconds));
        return out.toString();
    }

    private String table(List<DemoCommand.CacheRun> selected, boolean withSpeed) {
        StringBuilder md = new StringBuilder("| cache | avg K/V bits | KV bytes | compression | decode ppl | ppl / fp16 |"
                + (withSpeed ? " decode tokens/s |" : "") + "\n|---|---:|---:|---:|---:|---:|" + (withSpeed ? "---:|" : "") + "\n");
        for (DemoCommand.CacheRun run : selected) {
            md.append(String.format(Locale.ROOT, "| %s | %s | %,d | %.2fx | %.3f | %.4f |", run.name(), bits(run.plan()),
                    run.result().kvBytes().total(), compression(run), run.result().perplexity(), pplRatio(run)));
            if (withSpeed) {
                md.append(String.format(Locale.ROOT, " %.0f |", run.tokensPerSecond()));
            }
            md.append('\n');
        }
        return md.toString();
    }

    private double compression(DemoCommand.CacheRun run) {
        return (double) fp16().result().kvBytes().total() / run.result().kvBytes().total();
    }

    private double pplRatio(DemoCommand.CacheRun run) {
        return run.result().perplexity() / fp16().result().perplexity();
    }

    private static String bits(QuantPlan plan) {
        return plan == null ? "16/16" : String.format(Locale.ROOT, "%.2f/%.2f", plan.averageKeyBits(), plan.averageValueBits());
    }

    private static String oneLine(String generated) {
        return generated.strip().replaceAll("\\s+", " ");
    }
}
