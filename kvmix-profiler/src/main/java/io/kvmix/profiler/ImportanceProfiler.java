package io.kvmix.profiler;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.training.GradientCollector;
import io.kvmix.models.config.ModelConfig;
import io.kvmix.models.weights.LlamaWeights;
import io.kvmix.models.weights.MappedModel;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;

/**
 * Per-layer key/value importance of a Llama/Mistral checkpoint (KVmix's profiler).
 *
 * <p>For each calibration prompt (a batch of one) it runs one forward pass of the model as a DJL
 * autograd graph, takes the mean next-token cross-entropy (position t predicts token t+1), and runs
 * one backward pass; the gradients of every layer's {@code k_proj.weight} and {@code v_proj.weight}
 * come out of that single pass. A layer's importance is the L2 norm of its gradient, averaged over
 * prompts (the mean of the per-prompt norms). Prompts longer than the length limit are cut to their
 * first {@code maxLength} tokens, as the reference profiler does.
 *
 * <p>Runs on the CPU through the PyTorch engine in fp32. DJL is kept offline (its natives come from
 * the {@code pytorch-native-cpu} jar). Not thread-safe: PyTorch allows one gradient collection at a
 * time per process.
 *
 * <pre>{@code
 * try (ImportanceProfiler profiler = ImportanceProfiler.open(Path.of("models/llama"))) {
 *     ProfileResult result = profiler.profile(prompts, ImportanceProfiler.DEFAULT_MAX_LENGTH, ProfileListener.NONE);
 *     double[] keys = result.keyImportance();
 * }
 * }</pre>
 */
public final class ImportanceProfiler implements AutoCloseable {
    /** The reference's prompt length limit (tokens). */
    public static final int DEFAULT_MAX_LENGTH = 1024;

    private final MappedModel checkpoint;
    private final NDManager manager;
    private final AutogradLlama model;

    private ImportanceProfiler(MappedModel checkpoint, NDManager manager, AutogradLlama model) {
        this.checkpoint = checkpoint;
        this.manager = manager;
        this.model = model;
    }

    /**
     * Loads the checkpoint in {@code modelDir} (config.json + safetensors, validated by kvmix-models)
     * into an fp32 autograd graph.
     *
     * @throws io.kvmix.models.config.ConfigException         for a bad or unsupported config
     * @throws io.kvmix.models.weights.CheckpointException     for missing, malformed or non-finite weights
     */
    public static ImportanceProfiler open(Path modelDir) {
        keepDjlOffline();
        MappedModel checkpoint = LlamaWeights.open(modelDir);
        NDManager manager = null;
        try {
            manager = NDManager.newBaseManager(Device.cpu(), "PyTorch");
            AutogradLlama model = new AutogradLlama(checkpoint.weights(), manager);
            return new ImportanceProfiler(checkpoint, manager, model);
        } catch (RuntimeException | Error e) {
            if (manager != null) {
                manager.close();
            }
            checkpoint.close();
            throw e;
        }
    }

    /** DJL would otherwise look up model zoos and report usage over the network. */
    private static void keepDjlOffline() {
        if (System.getProperty("ai.djl.offline") == null) {
            System.setProperty("ai.djl.offline", "true");
        }
        if (System.getProperty("OPT_OUT_TRACKING") == null) {
            System.setProperty("OPT_OUT_TRACKING", "true");
        }
    }

    public ModelConfig config() {
        return model.config();
    }

    /**
     * Importance of every layer's keys and values over {@code prompts} (token ids, used verbatim: no
     * BOS is added). Each prompt is cut to its first {@code maxLength} tokens.
     *
     * @throws IllegalArgumentException if there is no prompt, a prompt has fewer than 2 tokens (no
     *                                  next token to predict) or a token id is outside the vocabulary
     *                                  (the message names the prompt and position)
     * @throws ArithmeticException      if a loss or gradient is not finite (names prompt and layer)
     */
    public ProfileResult profile(List<int[]> prompts, int maxLength, ProfileListener listener) {
        Objects.requireNonNull(listener, "listener");
        List<int[]> truncated = checkedPrompts(prompts, maxLength);
        int layers = model.config().numHiddenLayers();
        listener.started(truncated.size(), layers);
        List<PromptGradients> results = new ArrayList<>(truncated.size());
        int backwardPasses = 0;
        for (int p = 0; p < truncated.size(); p++) {
            int[] ids = truncated.get(p);
            try (NDManager scope = manager.newSubManager();
                 GradientCollector collector = Engine.getEngine("PyTorch").newGradientCollector()) {
                zeroProjectionGradients();
                NDArray loss = model.nextTokenLoss(scope, ids);
                collector.backward(loss);
                backwardPasses++;
                double lossValue = loss.getFloat();
                if (!Double.isFinite(lossValue)) {
                    throw new ArithmeticException("prompt " + p + ": loss is " + lossValue);
                }
                double[] keyNorms = new double[layers];
                double[] valueNorms = new double[layers];
                for (int layer = 0; layer < layers; layer++) {
                    keyNorms[layer] = gradientNorm(model.keyProjection(layer), p, layer, "k_proj");
                    valueNorms[layer] = gradientNorm(model.valueProjection(layer), p, layer, "v_proj");
                }
                PromptGradients gradients = new PromptGradients(p, ids.length, lossValue, keyNorms, valueNorms);
                results.add(gradients);
                listener.promptDone(gradients, p + 1, truncated.size());
            }
        }
        return new ProfileResult(results, mean(results, true, layers), mean(results, false, layers),
                results.size(), backwardPasses);
    }

    /**
     * Next-token logits of every position of {@code ids} from the autograd graph (no gradients
     * kept), {@code [T * vocab]} row-major: for checking the graph against other implementations.
     */
    public float[] logits(int[] ids) {
        List<int[]> checked = checkedPrompts(List.of(ids), Integer.MAX_VALUE);
        try (NDManager scope = manager.newSubManager()) {
            return model.logits(scope, checked.getFirst()).toFloatArray();
        }
    }

    private List<int[]> checkedPrompts(List<int[]> prompts, int maxLength) {
        Objects.requireNonNull(prompts, "prompts");
        if (maxLength < 2) {
            throw new IllegalArgumentException("max length " + maxLength + ", must be >= 2");
        }
        if (prompts.isEmpty()) {
            throw new IllegalArgumentException("no calibration prompts");
        }
        int vocab = model.config().vocabSize();
        List<int[]> checked = new ArrayList<>(prompts.size());
        for (int p = 0; p < prompts.size(); p++) {
            int[] ids = Objects.requireNonNull(prompts.get(p), "prompt " + p);
            if (ids.length < 2) {
                throw new IllegalArgumentException("prompt " + p + " has " + ids.length
                        + " token(s); at least 2 are needed to predict a next token");
            }
            int[] used = Arrays.copyOf(ids, Math.min(ids.length, maxLength));
            for (int t = 0; t < used.length; t++) {
                if (used[t] < 0 || used[t] >= vocab) {
                    throw new IllegalArgumentException("prompt " + p + ", position " + t + ": token id " + used[t]
                            + " is outside the vocabulary [0, " + vocab + ")");
                }
            }
            checked.add(used);
        }
        return checked;
    }

    /** PyTorch accumulates gradients across backward passes: every prompt starts from zero. */
    private void zeroProjectionGradients() {
        for (int layer = 0; layer < model.config().numHiddenLayers(); layer++) {
            zeroGradient(model.keyProjection(layer));
            zeroGradient(model.valueProjection(layer));
        }
    }

    private static void zeroGradient(NDArray weight) {
        try (NDArray gradient = weight.getGradient()) {
            gradient.subi(gradient);
        }
    }

    /** The L2 norm of {@code weight}'s gradient, summed in double from the fp32 gradient. */
    private static double gradientNorm(NDArray weight, int prompt, int layer, String name) {
        float[] gradient;
        try (NDArray array = weight.getGradient()) {
            gradient = array.toFloatArray();
        }
        double sumOfSquares = 0;
        for (float g : gradient) {
            sumOfSquares += (double) g * g;
        }
        if (!Double.isFinite(sumOfSquares)) {
            throw new ArithmeticException("prompt " + prompt + ", layer " + layer + ": the gradient of "
                    + name + ".weight is not finite");
        }
        return Math.sqrt(sumOfSquares);
    }

    private static double[] mean(List<PromptGradients> results, boolean keys, int layers) {
        double[] mean = new double[layers];
        for (PromptGradients result : results) {
            double[] norms = keys ? result.keyNorms() : result.valueNorms();
            for (int layer = 0; layer < layers; layer++) {
                mean[layer] += norms[layer] / results.size();
            }
        }
        return mean;
    }

    @Override
    public void close() {
        try {
            model.close();
            manager.close();
        } finally {
            checkpoint.close();
        }
    }
}
