package io.kvmix.profiler.readme;

import io.kvmix.core.plan.PlanFiles;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.models.readme.ReadmeSnippets;
import io.kvmix.models.tokenizer.TextTokenizer;
import io.kvmix.profiler.CalibrationPrompts;
import io.kvmix.profiler.ImportanceProfiler;
import io.kvmix.profiler.ProfileListener;
import io.kvmix.profiler.ProfileResult;
import io.kvmix.profiler.allocation.Allocation;
import io.kvmix.profiler.allocation.BudgetRule;
import io.kvmix.profiler.allocation.LayerImportance;
import io.kvmix.profiler.allocation.TiersRule;
import io.kvmix.profiler.chart.ImportanceChart;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Runs the profiler example of the README, and checks the README shows exactly this code. */
class ProfilerReadmeExampleTest {

    @Test
    void readmeExampleRuns(@TempDir Path dir) throws IOException {
        Path modelDir = Path.of("../src-test-data/models/tiny-llama-gqa");
        String calibrationText = Files.readString(Path.of("../src-test-data/data/heldout.txt")).substring(0, 8000);
        Path planFile = dir.resolve("plan.json");
        Path chartFile = dir.resolve("importance.png");
        // README-PROFILER-BEGIN
        try (ImportanceProfiler profiler = ImportanceProfiler.open(modelDir);
             TextTokenizer tokenizer = TextTokenizer.open(modelDir)) {
            List<int[]> prompts = CalibrationPrompts.split(tokenizer.encodeText(calibrationText), 256, "calibration");
            ProfileResult result = profiler.profile(prompts, ImportanceProfiler.DEFAULT_MAX_LENGTH,
                    ProfileListener.NONE);                                  // one forward + one backward per prompt
            LayerImportance importance = result.importance();
            int headDim = profiler.config().headDim();
            Allocation tiers = TiersRule.reference().allocate(importance, 32, headDim, "tiny-llama-gqa");
            Allocation budget = BudgetRule.of(3.0, 3.5).allocate(importance, 32, headDim, "tiny-llama-gqa");
            QuantPlan plan = tiers.plan();                                  // importance, rule and model recorded in it
            PlanFiles.write(plan, planFile);
            ImportanceChart.writePng(importance, plan, "tiny-llama-gqa", chartFile);
            System.out.printf("tiers: K %.2f / V %.2f bits; budget: K %.2f / V %.2f bits %s%n",
                    plan.averageKeyBits(), plan.averageValueBits(), budget.plan().averageKeyBits(),
                    budget.plan().averageValueBits(), budget.notes());
        }
        // README-PROFILER-END
        QuantPlan written = PlanFiles.read(planFile, 12, 64);
        assertEquals("tiers", written.rule());
        assertEquals(12, written.keyImportance().length);
        assertTrue(Files.size(chartFile) > 1000);
    }

    @Test
    void readmeShowsThisExample() throws IOException {
        ReadmeSnippets.assertReadmeShows(Path.of("src/test/java/io/kvmix/profiler/readme/ProfilerReadmeExampleTest.java"), "PROFILER");
    }
}
