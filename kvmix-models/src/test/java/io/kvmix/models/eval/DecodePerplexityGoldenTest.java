package io.kvmix.models.eval;

import static io.kvmix.models.llama.GoldenData.LLAMA;
import static io.kvmix.models.llama.GoldenData.MISTRAL;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.kvmix.core.cache.KvBytes;
import io.kvmix.core.cache.SequenceKvCache;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.llama.GoldenData;
import io.kvmix.models.llama.LlamaModel;
import io.kvmix.models.llama.LlamaState;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Decode perplexity (DESIGN.md "Accuracy protocol", T = 512, P = 64) against the goldens of
 * src-test-data: the fp cache against transformers, each KVmix plan against the PyTorch reference
 * of the quantized cache, Mistral's sliding window, and the live cache bytes.
 *
 * <p>Decoding runs at tens to hundreds of tokens per second here, so the fp cache is decoded on all
 * 8 golden windows but each quantized plan on a subset, compared with the golden's per-window NLLs
 * summed over the same subset; together the plan subsets cover every window once per model.
 */
class DecodePerplexityGoldenTest {
    private static final int PREFILL = 64;
    private static final int GROUP = 32;

    /** Windows decoded per plan ("fp" = fp16 cache vs transformers' fp32 forward). */
    private static final Map<String, int[]> WINDOWS = Map.of(
            "fp", new int[]{0, 1, 2, 3, 4, 5, 6, 7},
            "k2v2", new int[]{1, 6},
            "k4v4", new int[]{2},
            "k1v1", new int[]{4},
            "mixed_k3v4_first3_last", new int[]{5, 7});

    /** Allowed |ppl_java / ppl_golden - 1| on the same windows. */
    private static final Map<String, Double> TOLERANCE = Map.of(
            "fp", 0.001,
            "k2v2", 0.003,
            "k4v4", 0.002,
            "k1v1", 0.02,
            "mixed_k3v4_first3_last", 0.003);

    private static final Map<String, LlamaModel> MODELS = new HashMap<>();
    private static final Map<String, JsonNode> GOLDENS = new HashMap<>();
    private static final Map<String, DecodePerplexity.Result> RESULTS = new HashMap<>();
    private static List<int[]> windows;

    @BeforeAll
    static void load() {
        windows = GoldenData.windows();
        for (String name : List.of(LLAMA, MISTRAL)) {
            MODELS.put(name, LlamaModel.load(GoldenData.modelDir(name)));
            GOLDENS.put(name, GoldenData.golden(name));
        }
    }

    @AfterAll
    static void close() {
        MODELS.values().forEach(LlamaModel::close);
        MODELS.clear();
        RESULTS.clear();
    }

    @Test
    void windowsAreTheGoldenOnes() {
        assertEquals(8, windows.size());
        windows.forEach(w -> assertEquals(512, w.length));
        for (JsonNode golden : GOLDENS.values()) {
            JsonNode fp = golden.get("decode_ppl_fp");
            assertEquals(PREFILL, fp.get("prefill").intValue());
            assertEquals(512, fp.get("window_len").intValue());
            assertEquals(8, fp.get("per_window").size());
            assertEquals(GROUP, golden.get("decode_ppl_quant").get("group_size").intValue());
        }
    }

    /**
     * A full forward of each whole window (the prefill path, sliding window included) scores
     * tokens 64..511 as transformers does: every window within 0.1% in perplexity.
     */
    @ParameterizedTest
    @ValueSource(strings = {LLAMA, MISTRAL})
    void fullForwardNllMatchesTransformersOnAllWindows(String name) {
        LlamaModel model = MODELS.get(name);
        int vocab = model.config().vocabSize();
        JsonNode perWindow = GOLDENS.get(name).get("decode_ppl_fp").get("per_window");
        double javaSum = 0;
        double goldenSum = 0;
        double worst = 0;
        for (int w = 0; w < windows.size(); w++) {
            int[] window = windows.get(w);
            float[] logits;
            try (LlamaState state = model.newState(null)) {
                logits = model.forward(state, window, true);
            }
            double nll = 0;
            for (int t = PREFILL; t < window.length; t++) {
                nll += DecodePerplexity.negativeLogLikelihood(logits, (t - 1) * vocab, vocab, window[t]);
            }
            double golden = perWindow.get(w).get("nll_sum").doubleValue();
            int count = perWindow.get(w).get("count").intValue();
            assertEquals(window.length - PREFILL, count);
            double ratio = Math.exp((nll - golden) / count);
            worst = Math.max(worst, Math.abs(ratio - 1));
            assertTrue(Math.abs(ratio - 1) < TOLERANCE.get("fp"), name + " window " + w
                    + ": full-forward ppl ratio java/transformers = " + ratio + " (nll " + nll + " vs " + golden + ")");
            javaSum += nll;
            goldenSum += golden;
        }
        double total = Math.exp((javaSum - goldenSum) / (8.0 * (512 - PREFILL)));
        System.out.printf("[golden] %s full forward, 8 windows: ppl ratio java/transformers %.7f (worst window |r-1| %.2g)%n",
                name, total, worst);
        assertTrue(Math.abs(total - 1) < TOLERANCE.get("fp"), name + ": ratio over all windows " + total);
    }

    /** The decode path with an fp16 cache against transformers' fp32 full forward. */
    @ParameterizedTest
    @ValueSource(strings = {LLAMA, MISTRAL})
    void fpDecodePerplexityMatchesTransformers(String name) {
        checkAgainstGolden(name, "fp");
    }

    static Stream<Arguments> modelsAndPlans() {
        return Stream.of(LLAMA, MISTRAL)
                .flatMap(model -> GoldenData.PLANS.stream().map(plan -> Arguments.of(model, plan)));
    }

    /** Each reference plan moves decode perplexity where the PyTorch simulation of the cache says. */
    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("modelsAndPlans")
    void planDecodePerplexityMatchesReference(String name, String plan) {
        checkAgainstGolden(name, plan);
    }

    /** The plan files are what their names say: uniform plans equal {@link QuantPlan#uniform}'s layers. */
    @ParameterizedTest
    @ValueSource(strings = {LLAMA, MISTRAL})
    void planFilesAreTheReferencePlans(String name) {
        int layers = MODELS.get(name).config().numHiddenLayers();
        assertEquals(QuantPlan.uniform(layers, 2, 2, GROUP).layers(), GoldenData.plan(name, "k2v2").layers());
        assertEquals(QuantPlan.uniform(layers, 4, 4, GROUP).layers(), GoldenData.plan(name, "k4v4").layers());
        assertEquals(QuantPlan.uniform(layers, 1, 1, GROUP).layers(), GoldenData.plan(name, "k1v1").layers());
        QuantPlan mixed = GoldenData.plan(name, "mixed_k3v4_first3_last");
        for (int l = 0; l < layers; l++) {
            boolean upgraded = l < 3 || l == layers - 1;
            assertEquals(upgraded ? QuantPlan.uniform(1, 3, 4, GROUP).layer(0) : QuantPlan.uniform(1, 2, 2, GROUP).layer(0),
                    mixed.layer(l), name + " mixed plan layer " + l);
        }
        JsonNode plans = GOLDENS.get(name).get("decode_ppl_quant").get("plans");
        assertEquals(GoldenData.PLANS.size(), plans.size());
        GoldenData.PLANS.forEach(plan -> assertTrue(plans.has(plan), plan));
    }

    /**
     * Mistral's sliding window (128) is honoured: the real model matches the golden, and the same
     * weights with {@code sliding_window: null} (full causal attention) are off by more than 1%.
     */
    @Test
    void mistralSlidingWindowIsHonoured(@TempDir Path dir) {
        int w = WINDOWS.get("fp")[0];
        JsonNode golden = GOLDENS.get(MISTRAL).get("decode_ppl_fp").get("per_window").get(w);
        double goldenNll = golden.get("nll_sum").doubleValue();
        int count = golden.get("count").intValue();
        assertEquals(128, MODELS.get(MISTRAL).config().slidingWindow().orElseThrow());

        double withWindow = result(MISTRAL, "fp", new int[]{w}).nllSum();
        double ratioWith = Math.exp((withWindow - goldenNll) / count);

        Path noWindowDir = GoldenData.copyWithConfig(MISTRAL, dir, config -> config.putNull("sliding_window"));
        double withoutWindow;
        try (LlamaModel noWindow = LlamaModel.load(noWindowDir)) {
            assertTrue(noWindow.config().slidingWindow().isEmpty(), "copy still has a sliding window");
            withoutWindow = DecodePerplexity.evaluate(noWindow, null, List.of(windows.get(w)), PREFILL, null).nllSum();
        }
        double ratioWithout = Math.exp((withoutWindow - goldenNll) / count);
        System.out.printf("[golden] %s window %d: ppl ratio to transformers with sliding window %.7f, without %.5f%n",
                MISTRAL, w, ratioWith, ratioWithout);
        assertTrue(Math.abs(ratioWith - 1) < TOLERANCE.get("fp"),
                "with sliding_window 128: ppl ratio to transformers " + ratioWith);
        assertTrue(Math.abs(ratioWithout - 1) > 0.01,
                "without sliding window the ppl should be off by > 1%, ratio " + ratioWithout
                        + ": the window seems to be ignored by the real model too");
    }

    /**
     * The bytes the evaluation reports for K2V2 at the end of a window equal those of a cache driven
     * directly with the same appends (64, then 447 of one token) and FORMAT.md's arithmetic, with
     * the reference ratio policy simulated here; the token counts equal the golden's final state.
     */
    @Test
    void k2v2LiveBytesFollowFormatArithmetic() {
        LlamaModel model = MODELS.get(LLAMA);
        QuantPlan plan = GoldenData.plan(LLAMA, "k2v2");
        KvBytes reported = result(LLAMA, "k2v2", WINDOWS.get("k2v2")).kvBytes();

        int layers = model.config().numHiddenLayers();
        int kvHeads = model.config().numKeyValueHeads();
        int headDim = model.config().headDim();
        int decodeAppends = 512 - PREFILL - 1;

        KvBytes driven;
        try (SequenceKvCache cache = SequenceKvCache.create(model.kvShape(), plan)) {
            Random random = new Random(7);
            int width = kvHeads * headDim;
            for (int l = 0; l < layers; l++) {
                append(cache, l, random, width, PREFILL);
                for (int i = 0; i < decodeAppends; i++) {
                    append(cache, l, random, width, 1);
                }
            }
            assertEquals(511, cache.length());
            driven = cache.bytes();
        }

        // FORMAT.md sections 3-4 by hand; ratios and widths straight from the plan file's JSON
        JsonNode planJson = GoldenData.readJson(GoldenData.ROOT.resolve("goldens/plans/" + LLAMA + ".k2v2.json"));
        JsonNode finalState = GOLDENS.get(LLAMA).get("decode_ppl_quant").get("plans").get("k2v2").get("state_final");
        long codes = 0;
        long metadata = 0;
        long fp = 0;
        for (int l = 0; l < layers; l++) {
            JsonNode layer = planJson.get(Integer.toString(l));
            for (boolean keys : new boolean[]{true, false}) {
                int bits = layer.get(keys ? "k_bits" : "v_bits").intValue();
                double ratio = layer.get(keys ? "k_residual_ratio" : "v_residual_ratio").doubleValue();
                int[] tokens = simulateRatioPolicy(ratio, PREFILL, decodeAppends);   // {quantized, fp}
                String stream = keys ? "k" : "v";
                assertEquals(finalState.get(stream + "_quantized").get(l).intValue(), tokens[0], "layer " + l + " " + stream);
                assertEquals(finalState.get(stream + "_fp_buffer").get(l).intValue(), tokens[1], "layer " + l + " " + stream);
                int laneLen = keys ? GROUP : headDim;
                int packLen = keys ? headDim : GROUP;
                int groupLen = keys ? GROUP : Math.min(GROUP, headDim);
                long runs = (packLen + 31) / 32;
                long codeBytes = 4 * runs * bits * laneLen;
                long metaCount = (long) packLen * (laneLen / groupLen);
                long blocks = tokens[0] / GROUP;
                codes += blocks * kvHeads * codeBytes;
                metadata += blocks * kvHeads * 4 * metaCount;
                fp += (long) tokens[1] * kvHeads * headDim * 2;
            }
        }
        KvBytes expected = new KvBytes(codes, metadata, fp);
        System.out.printf("[golden] %s K2V2 bytes after 511 tokens: reported %s, driven %s, FORMAT.md %s (fp16 cache %d)%n",
                LLAMA, reported, driven, expected, 511L * model.kvShape().fp16BytesPerToken());
        assertEquals(expected, driven, "cache driven with 64 + 447 x 1 appends vs FORMAT.md arithmetic");
        assertEquals(expected, reported, "DecodePerplexity.Result.kvBytes() vs FORMAT.md arithmetic");
        // 12 layers x 2 streams x (15 blocks x 2 heads x (512 + 256) bytes + 31 tokens x 2 heads x 128 bytes)
        assertEquals(12L * 2 * (15 * 2 * 768 + 31 * 2 * 128), expected.total());
        assertTrue(expected.total() < 511L * model.kvShape().fp16BytesPerToken() / 3);
    }

    private static void append(SequenceKvCache cache, int layer, Random random, int width, int tokens) {
        float[] k = new float[tokens * width];
        float[] v = new float[tokens * width];
        for (int i = 0; i < k.length; i++) {
            k[i] = (float) random.nextGaussian();
            v[i] = (float) random.nextGaussian();
        }
        cache.layer(layer).append(k, 0, v, 0, tokens);
    }

    /**
     * DESIGN.md "ratio" policy: after each append the FP buffer has n tokens; keep floor(r n) and
     * quantize the oldest floor((n - keep) / G) G. Returns {quantized tokens, FP-buffer tokens}.
     */
    private static int[] simulateRatioPolicy(double ratio, int prefill, int singleAppends) {
        int quantized = 0;
        int buffer = 0;
        for (int step = 0; step <= singleAppends; step++) {
            buffer += step == 0 ? prefill : 1;
            int keep = (int) Math.floor(ratio * buffer);
            int leave = (buffer - keep) / GROUP * GROUP;
            buffer -= leave;
            quantized += leave;
        }
        return new int[]{quantized, buffer};
    }

    /** Decode perplexity of {@code plan} on its windows against the golden's per-window NLLs. */
    private static void checkAgainstGolden(String name, String plan) {
        int[] subset = WINDOWS.get(plan);
        JsonNode section = plan.equals("fp") ? GOLDENS.get(name).get("decode_ppl_fp")
                : GOLDENS.get(name).get("decode_ppl_quant").get("plans").get(plan);
        JsonNode fpPerWindow = GOLDENS.get(name).get("decode_ppl_fp").get("per_window");
        double goldenNll = 0;
        double goldenFpNll = 0;
        long count = 0;
        for (int w : subset) {
            goldenNll += section.get("per_window").get(w).get("nll_sum").doubleValue();
            goldenFpNll += fpPerWindow.get(w).get("nll_sum").doubleValue();
            count += section.get("per_window").get(w).get("count").intValue();
        }
        DecodePerplexity.Result result = result(name, plan, subset);
        assertEquals(count, result.predictions());
        assertEquals(subset.length, result.windows());
        double goldenPpl = Math.exp(goldenNll / count);
        double ratio = result.perplexity() / goldenPpl;
        System.out.printf("[golden] %s %s windows %s: ppl java %.4f, golden %.4f, ratio %.6f; ratio to fp java %.5f, golden %.5f%n",
                name, plan, Arrays.toString(subset), result.perplexity(), goldenPpl, ratio,
                result.perplexity() / Math.exp(goldenFpNll / count), goldenPpl / Math.exp(goldenFpNll / count));
        assertTrue(Math.abs(ratio - 1) < TOLERANCE.get(plan), name + " " + plan + " on windows "
                + Arrays.toString(subset) + ": ppl " + result.perplexity() + " vs golden " + goldenPpl
                + ", ratio " + ratio + " (allowed +-" + TOLERANCE.get(plan) + ")");
        if (plan.equals("fp")) {
            assertEquals(0, result.kvBytes().codes(), "an fp cache has no packed codes");
            // tighter: the reference's own fp16 cache without quantization (same rounding as ours)
            JsonNode fp16 = GOLDENS.get(name).get("decode_ppl_quant").get("identity_fp16_cache").get("per_window");
            double fp16Nll = 0;
            for (int w : subset) {
                fp16Nll += fp16.get(w).get("nll_sum").doubleValue();
            }
            double fp16Ratio = Math.exp((result.nllSum() - fp16Nll) / count);
            System.out.printf("[golden] %s fp16 cache vs the reference's fp16 cache: ppl ratio %.8f%n", name, fp16Ratio);
            assertTrue(Math.abs(fp16Ratio - 1) < 1e-4, name + ": ppl ratio to the reference fp16 cache " + fp16Ratio);
        }
    }

    /** Evaluated once per (model, plan, windows) and shared by the tests of this class. */
    private static DecodePerplexity.Result result(String name, String plan, int[] subset) {
        String key = name + "/" + plan + "/" + Arrays.toString(subset);
        DecodePerplexity.Result cached = RESULTS.get(key);
        if (cached != null) {
            return cached;
        }
        QuantPlan quantPlan = plan.equals("fp") ? null : GoldenData.plan(name, plan);
        List<int[]> selected = new ArrayList<>();
        for (int w : subset) {
            selected.add(windows.get(w));
        }
        long start = System.nanoTime();
        DecodePerplexity.Result result = DecodePerplexity.evaluate(MODELS.get(name), quantPlan, selected, PREFILL, null);
        double seconds = (System.nanoTime() - start) / 1e9;
        System.out.printf("[golden] %s %s: %d predictions in %.1f s (%.0f tokens/s)%n", name, plan,
                result.predictions(), seconds, subset.length * (512 - 1) / seconds);
        RESULTS.put(key, result);
        return result;
    }
}
