package io.kvmix.profiler.chart;

import io.kvmix.core.plan.LayerQuant;
import io.kvmix.core.plan.QuantPlan;
import io.kvmix.profiler.allocation.LayerImportance;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.CategoryChart;
import org.knowm.xchart.CategoryChartBuilder;
import org.knowm.xchart.style.CategoryStyler;
import org.knowm.xchart.style.Styler;

import java.io.IOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.stream.IntStream;

/**
 * A bar chart of key and value importance per layer with the plan's widths on the axis: two bars
 * per layer (key and value gradient norm) and a category label such as {@code L0 K3/V4}, the layer
 * index and its key and value code widths. Drawn off screen, so it works without a display: unless
 * the caller already chose, loading this class sets {@code java.awt.headless=true}.
 */
public final class ImportanceChart {
    /** Width of the written image, in pixels. */
    public static final int WIDTH = 1200;
    /** Height of the written image, in pixels. */
    public static final int HEIGHT = 600;

    static {
        if (System.getProperty("java.awt.headless") == null) {
            System.setProperty("java.awt.headless", "true");
        }
    }

    private ImportanceChart() {
    }

    /**
     * Draws the chart and writes it to {@code png} as a {@value #WIDTH} x {@value #HEIGHT} PNG,
     * replacing any file there.
     *
     * @param plan  the plan whose widths label the layers; as many layers as {@code importance}
     * @param title the chart's title, e.g. the model name
     * @throws IllegalArgumentException when the plan and the scores disagree on the layer count
     * @throws IOException naming {@code png} and the reason when it cannot be written
     */
    public static void writePng(LayerImportance importance, QuantPlan plan, String title, Path png)
            throws IOException {
        Objects.requireNonNull(png, "png");
        byte[] image = BitmapEncoder.getBitmapBytes(chart(importance, plan, title), BitmapEncoder.BitmapFormat.PNG);
        try {
            Files.write(png, image);
        } catch (IOException e) {
            throw new IOException("cannot write the importance chart to " + png + ": " + reason(e), e);
        }
    }

    static CategoryChart chart(LayerImportance importance, QuantPlan plan, String title) {
        Objects.requireNonNull(importance, "importance");
        Objects.requireNonNull(plan, "plan");
        Objects.requireNonNull(title, "title");
        if (plan.layerCount() != importance.layerCount()) {
            throw new IllegalArgumentException("plan has " + plan.layerCount() + " layers, importance has "
                    + importance.layerCount());
        }
        CategoryChart chart = new CategoryChartBuilder()
                .width(WIDTH)
                .height(HEIGHT)
                .title(title)
                .xAxisTitle("layer and widths (K = key bits, V = value bits)")
                .yAxisTitle("importance (gradient L2 norm)")
                .build();
        CategoryStyler styler = chart.getStyler();
        // Below the plot, so that it never hides a bar.
        styler.setLegendPosition(Styler.LegendPosition.OutsideS);
        styler.setLegendLayout(Styler.LegendLayout.Horizontal);
        styler.setXAxisLabelRotation(90);
        List<String> labels = IntStream.range(0, plan.layerCount()).mapToObj(i -> label(i, plan.layer(i))).toList();
        chart.addSeries("keys ||dL/dW_k||", labels, boxed(importance.keys()));
        chart.addSeries("values ||dL/dW_v||", labels, boxed(importance.values()));
        return chart;
    }

    private static String label(int index, LayerQuant layer) {
        return "L" + index + " K" + layer.keys().bits().bits() + "/V" + layer.values().bits().bits();
    }

    private static List<Double> boxed(double[] scores) {
        return Arrays.stream(scores).boxed().toList();
    }

    private static String reason(IOException e) {
        return switch (e) {
            case NoSuchFileException _ -> "no such directory";
            case AccessDeniedException _ -> "permission denied";
            case FileSystemException other when other.getReason() != null -> other.getReason();
            default -> e.getMessage();
        };
    }
}
