package io.kvmix.core.readme;

import io.kvmix.core.attention.FusedAttention;
import io.kvmix.core.cache.KvBytes;
import io.kvmix.core.cache.LayerKvCache;
import io.kvmix.core.cache.ModelKvShape;
import io.kvmix.core.cache.SequenceKvCache;
import io.kvmix.core.plan.QuantPlan;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Runs the embedding example of the README, and checks the README shows exactly this code. */
class ReadmeExampleTest {

    static float[] projection(Random random, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) random.nextGaussian();
        }
        return x;
    }

    @Test
    void readmeExampleRuns() {
        Random random = new Random(0);
        // README-BEGIN
        // A small grouped-query model: 4 layers, 8 query heads, 2 KV heads of 64 channels, 2048 tokens max.
        ModelKvShape shape = new ModelKvShape(4, 8, 2, 64, 2048, 0);
        QuantPlan plan = QuantPlan.uniform(shape.layers(), 2, 2, 32);     // or PlanFiles.read(Path.of("plan.json"))
        int kvWidth = shape.kvHeads() * shape.headDim();
        int qWidth = shape.queryHeads() * shape.headDim();
        try (SequenceKvCache cache = SequenceKvCache.create(shape, plan)) {
            int prompt = 300;
            for (int step = 0; step < 50; step++) {
                int tokens = step == 0 ? prompt : 1;                       // prefill, then decode one token at a time
                for (int l = 0; l < shape.layers(); l++) {
                    float[] k = projection(random, tokens * kvWidth);      // k_proj output after RoPE: [tokens][kvHeads * headDim]
                    float[] v = projection(random, tokens * kvWidth);      // v_proj output
                    float[] q = projection(random, tokens * qWidth);       // q_proj output after RoPE: [tokens][heads * headDim]
                    float[] out = new float[tokens * qWidth];
                    LayerKvCache layer = cache.layer(l);
                    layer.append(k, 0, v, 0, tokens);
                    FusedAttention.vector().attend(layer, q, 0, tokens, shape.queryHeads(), shape.attentionScale(), out, 0);
                }
            }
            KvBytes bytes = cache.bytes();
            System.out.printf("%d tokens: %d bytes (codes %d, metadata %d, fp16 %d), fp16 cache %d bytes%n",
                    cache.length(), bytes.total(), bytes.codes(), bytes.metadata(), bytes.fullPrecision(),
                    cache.length() * shape.fp16BytesPerToken());
        }
        // README-END
        try (SequenceKvCache cache = SequenceKvCache.create(shape, plan)) {
            for (int l = 0; l < shape.layers(); l++) {
                cache.layer(l).append(projection(random, 349 * kvWidth), 0, projection(random, 349 * kvWidth), 0, 349);
            }
            assertEquals(349, cache.length());
            // per layer and stream: ratio 0.2 keeps 69 of 349, quantizes 256 (8 blocks of 2 heads x 768 bytes), 93 stay fp16
            assertEquals(4 * 2 * (8 * 2 * 768 + 93 * 2 * 64 * 2), cache.bytes().total());
        }
    }

    @Test
    void readmeShowsThisExample() throws IOException {
        String test = Files.readString(Path.of("src/test/java/io/kvmix/core/readme/ReadmeExampleTest.java"));
        Matcher inTest = Pattern.compile("// README-BEGIN\\R(.*?)\\R\\s*// README-END", Pattern.DOTALL).matcher(test);
        assertTrue(inTest.find());
        String readme = Files.readString(Path.of("../README.md"));
        assertTrue(normalize(readme).contains(normalize(inTest.group(1))),
                "README.md must contain the example of ReadmeExampleTest verbatim (indentation aside)");
    }

    private static String normalize(String code) {
        return code.lines().map(String::strip).filter(line -> !line.isEmpty()).reduce("", (a, b) -> a + b + "\n");
    }
}
