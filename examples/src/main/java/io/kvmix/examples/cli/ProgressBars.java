package io.kvmix.examples.cli;

import me.tongfei.progressbar.DelegatingProgressBarConsumer;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;

import java.io.PrintWriter;

/** Progress bars of the CLI: drawn on stderr (never stdout, which may carry JSON), redrawn in place. */
final class ProgressBars {
    private static final int WIDTH = 90;

    private ProgressBars() {
    }

    /** A bar of {@code total} steps named {@code task}; closing it draws the final state and a newline. */
    static ProgressBar open(PrintWriter err, String task, long total, String unit) {
        DelegatingProgressBarConsumer consumer = new DelegatingProgressBarConsumer(line -> {
            err.print('\r');
            err.print(line);
            err.flush();
        }, WIDTH) {
            @Override
            public void close() {
                err.println();
                err.flush();
            }
        };
        return new ProgressBarBuilder()
                .setTaskName(task)
                .setInitialMax(total)
                .setUnit(" " + unit, 1)
                .setStyle(ProgressBarStyle.ASCII)
                .setMaxRenderedLength(WIDTH)
                .setUpdateIntervalMillis(250)
                .setConsumer(consumer)
                .build();
    }
}
