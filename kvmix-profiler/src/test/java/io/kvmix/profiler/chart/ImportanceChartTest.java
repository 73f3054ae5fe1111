package io.kvmix.profiler.chart;

import io.kvmix.core.plan.QuantPlan;
import io.kvmix.profiler.allocation.LayerImportance;
import io.kvmix.profiler.allocation.TiersRule;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import javax.imageio.ImageIO;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ImportanceChartTest {
    private static final LayerImportance IMPORTANCE = new LayerImportance(
            new double[] {0.50, 0.90, 0.10, 0.30, 0.70, 0.20, 0.05, 0.60, 0.80, 0.40, 0.15, 0.25},
            new double[] {0.95, 0.10, 0.20, 0.85, 0.30, 0.40, 0.50, 0.05, 0.15, 0.25, 0.35, 0.45});
    private static final QuantPlan PLAN = TiersRule.reference().allocate(IMPORTANCE, 32, 128, null).plan();

    @Test
    void writesAPngOfTheDocumentedSizeWithoutADisplay(@TempDir Path dir) throws IOException {
        Path png = dir.resolve("importance.png");
        ImportanceChart.writePng(IMPORTANCE, PLAN, "test model", png);
        assertEquals("true", System.getProperty("java.awt.headless"));
        BufferedImage image = ImageIO.read(png.toFile());
        assertNotNull(image, "ImageIO could not decode " + png);
        assertEquals(ImportanceChart.WIDTH, image.getWidth());
        assertEquals(ImportanceChart.HEIGHT, image.getHeight());
    }

    @Test
    void labelsEveryLayerWithItsKeyAndValueWidths() {
        var chart = ImportanceChart.chart(IMPORTANCE, PLAN, "test model");
        var keys = chart.getSeriesMap().get("keys ||dL/dW_k||");
        assertEquals(List.of("L0 K2/V4", "L1 K3/V2", "L2 K2/V2"), keys.getXData().stream().limit(3).toList());
        assertEquals(0.9, keys.getYData().stream().skip(1).findFirst().orElseThrow().doubleValue());
        assertEquals(2, chart.getSeriesMap().size());
    }

    @Test
    void anUnwritablePathFailsNamingThePathAndTheReason(@TempDir Path dir) {
        Path missingDirectory = dir.resolve("no-such-dir").resolve("importance.png");
        IOException missing = assertThrows(IOException.class,
                () -> ImportanceChart.writePng(IMPORTANCE, PLAN, "t", missingDirectory));
        assertEquals("cannot write the importance chart to " + missingDirectory + ": no such directory",
                missing.getMessage());
        IOException directory = assertThrows(IOException.class,
                () -> ImportanceChart.writePng(IMPORTANCE, PLAN, "t", dir));
        assertTrue(directory.getMessage().startsWith("cannot write the importance chart to " + dir + ": "),
                directory.getMessage());
        assertFalse(Files.exists(missingDirectory));
    }

    @Test
    void rejectsAPlanForAnotherLayerCount(@TempDir Path dir) {
        QuantPlan other = QuantPlan.uniform(4, 2, 2, 32);
        IllegalArgumentException problem = assertThrows(IllegalArgumentException.class,
                () -> ImportanceChart.writePng(IMPORTANCE, other, "t", dir.resolve("x.png")));
        assertEquals("plan has 4 layers, importance has 12", problem.getMessage());
    }
}
