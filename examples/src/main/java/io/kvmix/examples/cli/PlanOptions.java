package io.kvmix.examples.cli;

import io.kvmix.core.plan.PlanFiles;
import io.kvmix.core.plan.PlanValidationException;
import io.kvmix.core.plan.QuantPlan;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;

/**
 * The cache a command runs with: {@code --plan FILE} (own format or the reference's quant_bits dict),
 * {@code --uniform K,V} or {@code --fp16}, plus overrides of the plan's policy knobs.
 */
public final class PlanOptions {

    static final class Choice {
        @Option(names = "--plan", paramLabel = "FILE",
                description = "Plan file: kvmix JSON or the reference's quant_bits dict.")
        Path planFile;

        @Option(names = "--uniform", paramLabel = "K,V",
                description = "Every layer K-bit keys and V-bit values, reference residual ratios (4->0.3, 3->0.2, 2->0.2, 1->0.1).")
        String uniform;

        @Option(names = "--fp16", description = "Full-precision fp16 cache (no quantization); the default.")
        boolean fp16;
    }

    @ArgGroup(exclusive = true, multiplicity = "0..1")
    Choice choice;

    @Option(names = "--group", paramLabel = "G", description = "Override the group size (a multiple of 32).")
    Integer group;

    @Option(names = "--residual-window", paramLabel = "R",
            description = "Override every layer's residual policy with window(R): the newest R..R+G-1 tokens stay fp16.")
    Integer window;

    @Option(names = "--sinks", paramLabel = "S", description = "Keep the first S tokens fp16 forever.")
    Integer sinks;

    /** A few words for humans: "fp16", "uniform K2/V2", or the plan's rule and average bits. */
    public static String describe(QuantPlan plan) {
        if (plan == null) {
            return "fp16";
        }
        return String.format(java.util.Locale.ROOT, "%s plan, avg K %.2f / V %.2f bits", plan.rule(),
                plan.averageKeyBits(), plan.averageValueBits());
    }

    /** Sets the residual window from a command's own spelling of the flag (memory's {@code --window R}). */
    void residualWindow(Integer tokens, String flag) {
        if (tokens != null && window != null) {
            throw new IllegalArgumentException(flag + " and --residual-window both given");
        }
        if (tokens != null) {
            window = tokens;
        }
    }

    /** The plan for a model of {@code layers} layers and head size {@code headDim}, or null for fp16 (the default). */
    public QuantPlan resolve(int layers, int headDim) {
        if (choice == null || choice.fp16) {
            if (group != null || window != null || sinks != null) {
                throw new IllegalArgumentException("--group/--residual-window/--sinks need a plan (--plan or --uniform), not fp16");
            }
            return null;
        }
        QuantPlan plan;
        String source;
        if (choice.planFile != null) {
            try {
                plan = PlanFiles.read(choice.planFile, layers, headDim);
            } catch (IOException e) {
                throw new UncheckedIOException(choice.planFile + ": " + e.getMessage(), e);
            }
            source = choice.planFile.toString();
        } else {
            plan = QuantPlan.uniform(layers, parseBits(0), parseBits(1), 32);
            source = "--uniform " + choice.uniform;
        }
        if (group != null) {
            plan = plan.withGroupSize(group);
        }
        if (window != null) {
            plan = plan.withResidualWindow(window);
        }
        if (sinks != null) {
            plan = plan.withSinks(sinks);
        }
        var problems = plan.problems(layers, headDim);
        if (!problems.isEmpty()) {
            throw new PlanValidationException(source, problems);
        }
        return plan;
    }

    private int parseBits(int index) {
        String[] parts = choice.uniform.split(",");
        if (parts.length != 2) {
            throw new IllegalArgumentException("--uniform " + choice.uniform + ": expected K,V such as 2,2");
        }
        try {
            int bits = Integer.parseInt(parts[index].strip());
            if (bits < 1 || bits > 4) {
                throw new IllegalArgumentException("--uniform " + choice.uniform + ": "
                        + (index == 0 ? "K" : "V") + "=" + bits + ", must be 1-4");
            }
            return bits;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--uniform " + choice.uniform + ": expected K,V such as 2,2");
        }
    }
}
