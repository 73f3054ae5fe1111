/** Charts of profiler results, drawn with XChart and written as PNG without a display. */
package io.kvmix.profiler.chart;
