package io.kvmix.examples.cli;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.eval.DecodePerplexity;
import io.kvmix.models.llama.LlamaModel;
import io.kvmix.models.tokenizer.TextTokenizer;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
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
import java.util.concurrent.Callable;

/** Decode perplexity of a model over held-out text with an fp16 cache or a KVmix plan. */
@Command(name = "ppl", mixinStandardHelpOptions = true,
        description = "Decode perplexity: prefill P tokens of each window, then feed the rest one token at a time through the cache.")
public final class PplCommand implements Callable<Integer> {

    static final class Input {
        @Option(names = "--text", paramLabel = "FILE", description = "Plain text, tokenized without special tokens.")
        Path text;

        @Option(names = "--token-ids", paramLabel = "FILE",
                description = "JSON: a flat array of ids (split into windows) or an array of arrays (one window each).")
        Path tokenIds;
    }

    @Option(names = "--model", paramLabel = "DIR", required = true, description = "Model directory (config.json, safetensors, tokenizer.json).")
    Path model;

    @ArgGroup(exclusive = true, multiplicity = "1")
    Input input;

    @Option(names = "--window", defaultValue = "512", description = "Tokens per window T (default ${DEFAULT-VALUE}).")
    int window;

    @Option(names = "--prefill", defaultValue = "64", description = "Prefilled tokens per window P (default ${DEFAULT-VALUE}).")
    int prefill;

    @Option(names = "--windows", paramLabel = "N", description = "Evaluate the first N windows (default: all).")
    Integer windows;

    @Mixin
    PlanOptions planOptions;

    @Option(names = "--json", description = "Print one JSON object on stdout.")
    boolean json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        try (LlamaModel llama = LlamaModel.load(model)) {
            QuantPlan plan = planOptions.resolve(llama.config().numHiddenLayers(), llama.config().headDim());
            List<int[]> all = windows();
            if (windows != null) {
                if (windows < 1) {
                    throw new IllegalArgumentException("--windows " + windows + ": must be >= 1");
                }
                all = all.subList(0, Math.min(windows, all.size()));
            }
            PrintWriter err = spec.commandLine().getErr();
            List<int[]> selected = all;
            DecodePerplexity.Result result = DecodePerplexity.evaluate(llama, plan, selected, prefill,
                    w -> { err.printf("window %d/%d%n", w + 1, selected.size()); err.flush(); });
            PrintWriter out = spec.commandLine().getOut();
            if (json) {
                ObjectNode node = JsonOutput.object();
                node.put("model", model.toString());
                node.put("plan", plan == null ? "fp16" : plan.rule());
                node.put("ppl", result.perplexity());
                node.put("nll_sum", result.nllSum());
                node.put("predictions", result.predictions());
                node.put("windows", result.windows());
                node.put("window", window);
                node.put("prefill", prefill);
                node.put("kv_bytes", result.kvBytes().total());
                node.put("codes_bytes", result.kvBytes().codes());
                node.put("metadata_bytes", result.kvBytes().metadata());
                node.put("fp_bytes", result.kvBytes().fullPrecision());
                JsonOutput.print(out, node);
            } else {
                out.printf("decode perplexity %.4f over %d predictions in %d windows (%s; %,d KV bytes at the end)%n",
                        result.perplexity(), result.predictions(), result.windows(), PlanOptions.describe(plan),
                        result.kvBytes().total());
                out.flush();
            }
            return 0;
        }
    }

    /** Windows of exactly {@code --window} tokens from text or a flat id array; an array of arrays as given. */
    private List<int[]> windows() {
        if (window <= prefill) {
            throw new IllegalArgumentException("--window " + window + " must be larger than --prefill " + prefill);
        }
        if (input.tokenIds != null) {
            List<int[]> sequences = TokenInput.read(input.tokenIds);
            return sequences.size() > 1 ? sequences : split(sequences.getFirst(), input.tokenIds.toString());
        }
        String text;
        try {
            text = Files.readString(input.text);
        } catch (IOException e) {
            throw new UncheckedIOException(input.text + ": " + e.getMessage(), e);
        }
        try (TextTokenizer tokenizer = TextTokenizer.open(model)) {
            return split(tokenizer.encodeText(text), input.text.toString());
        }
    }

    private List<int[]> split(int[] ids, String source) {
        List<int[]> out = new ArrayList<>();
        for (int start = 0; start + window <= ids.length; start += window) {
            out.add(Arrays.copyOfRange(ids, start, start + window));
        }
        if (out.isEmpty()) {
            throw new IllegalArgumentException(source + ": " + ids.length + " tokens, fewer than one window of " + window);
        }
        return out;
    }
}
