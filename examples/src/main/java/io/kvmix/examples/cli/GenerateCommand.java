package io.kvmix.examples.cli;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.generation.Generator;
import io.kvmix.models.generation.SamplingOptions;
import io.kvmix.models.llama.LlamaModel;
import io.kvmix.models.tokenizer.TextTokenizer;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

/** Generates a continuation of a prompt, streaming the text as it is produced. */
@Command(name = "generate", mixinStandardHelpOptions = true, description = "Generate text with an fp16 cache or a KVmix plan.")
public final class GenerateCommand implements Callable<Integer> {

    static final class Prompt {
        @Option(names = "--prompt", paramLabel = "TEXT", description = "Prompt text (the tokenizer adds its special tokens, e.g. BOS).")
        String text;

        @Option(names = "--prompt-ids", paramLabel = "FILE", description = "JSON flat array of token ids, used verbatim.")
        Path ids;
    }

    @Option(names = "--model", paramLabel = "DIR", required = true, description = "Model directory.")
    Path model;

    @ArgGroup(exclusive = true, multiplicity = "1")
    Prompt prompt;

    @Option(names = "--max-new", defaultValue = "64", description = "New tokens at most (default ${DEFAULT-VALUE}).")
    int maxNew;

    @Option(names = "--min-new", defaultValue = "0", description = "EOS is impossible before this many new tokens (default ${DEFAULT-VALUE}).")
    int minNew;

    @Option(names = "--greedy", description = "Always take the most likely token (default: sample).")
    boolean greedy;

    @Option(names = "--temperature", defaultValue = "1.0", description = "Sampling temperature (default ${DEFAULT-VALUE}).")
    double temperature;

    @Option(names = "--top-p", defaultValue = "1.0", description = "Nucleus sampling mass (default ${DEFAULT-VALUE}).")
    double topP;

    @Option(names = "--seed", defaultValue = "0", description = "Sampling seed (default ${DEFAULT-VALUE}).")
    long seed;

    @Mixin
    PlanOptions planOptions;

    @Option(names = "--json", description = "Print one JSON object on stdout instead of streaming text.")
    boolean json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        SamplingOptions sampling = new SamplingOptions(maxNew, minNew, greedy, temperature, topP, seed, true);
        try (LlamaModel llama = LlamaModel.load(model); TextTokenizer tokenizer = TextTokenizer.open(model)) {
            QuantPlan plan = planOptions.resolve(llama.config().numHiddenLayers(), llama.config().headDim());
            int[] ids = prompt.ids != null ? TokenInput.readFlat(prompt.ids) : tokenizer.encodePrompt(prompt.text);
            PrintWriter out = spec.commandLine().getOut();
            List<Integer> streamed = new ArrayList<>();
            StringBuilder printed = new StringBuilder();
            Generator.Generation generation = Generator.generate(llama, plan, ids, sampling, token -> {
                if (!json) {
                    streamed.add(token);
                    String text = tokenizer.decode(streamed.stream().mapToInt(Integer::intValue).toArray());
                    if (text.startsWith(printed.toString())) {
                        out.print(text.substring(printed.length()));
                        out.flush();
                        printed.setLength(0);
                        printed.append(text);
                    }
                }
            });
            String text = tokenizer.decode(generation.newTokens());
            if (json) {
                ObjectNode node = JsonOutput.object();
                node.put("model", model.toString());
                node.put("plan", plan == null ? "fp16" : plan.rule());
                ArrayNode promptIds = node.putArray("prompt_ids");
                for (int id : ids) {
                    promptIds.add(id);
                }
                ArrayNode newIds = node.putArray("ids");
                for (int id : generation.newTokens()) {
                    newIds.add(id);
                }
                node.put("text", text);
                node.put("stopped_at_eos", generation.stoppedAtEos());
                node.put("prefill_seconds", generation.prefillSeconds());
                node.put("decode_tokens_per_second", generation.decodeTokensPerSecond());
                node.put("kv_bytes", generation.kvBytes().total());
                JsonOutput.print(out, node);
            } else {
                if (text.length() > printed.length() && text.startsWith(printed.toString())) {
                    out.print(text.substring(printed.length()));
                }
                out.println();
                out.flush();
                spec.commandLine().getErr().printf("%d new tokens, %.1f tokens/s decode, %s, %,d KV bytes%s%n",
                        generation.newTokens().length, generation.decodeTokensPerSecond(), PlanOptions.describe(plan),
                        generation.kvBytes().total(), generation.stoppedAtEos() ? ", stopped at EOS" : "");
            }
            return 0;
        }
    }
}
