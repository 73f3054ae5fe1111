package io.kvmix.cuda;

import jcuda.CudaException;
import jcuda.driver.JCudaDriver;

/**
 * Whether this process can use an NVIDIA GPU, decided once: JCuda's native library must load (it
 * throws an {@link UnsatisfiedLinkError}, a {@link LinkageError}, on a machine without the CUDA
 * driver), {@code cuInit} must succeed and at least one device must exist.
 */
public final class CudaRuntime {
    private static final Object LOCK = new Object();
    private static volatile Probe probe;
    private static CudaDevice device;

    private record Probe(boolean available, String reason) {
    }

    private CudaRuntime() {
    }

    /** True when a CUDA device can be used; never throws. */
    public static boolean isAvailable() {
        return probe().available();
    }

    /** Why the GPU cannot be used ("no CUDA driver: ...", "no CUDA device"), or "available". */
    public static String unavailableReason() {
        return probe().reason();
    }

    /**
     * Device 0, with its primary context, kernels and stream, created on first use and kept for the
     * life of the process.
     *
     * @throws IllegalStateException naming the reason when no GPU can be used
     */
    public static CudaDevice device() {
        Probe p = probe();
        if (!p.available()) {
            throw new IllegalStateException("CUDA is not available: " + p.reason());
        }
        synchronized (LOCK) {
            if (device == null) {
                device = CudaDevice.open(0);
            }
            return device;
        }
    }

    private static Probe probe() {
        Probe p = probe;
        if (p == null) {
            synchronized (LOCK) {
                if (probe == null) {
                    probe = detect();
                }
                p = probe;
            }
        }
        return p;
    }

    private static Probe detect() {
        try {
            JCudaDriver.setExceptionsEnabled(true);
            JCudaDriver.cuInit(0);
            int[] count = {0};
            JCudaDriver.cuDeviceGetCount(count);
            if (count[0] == 0) {
                return new Probe(false, "no CUDA device");
            }
            return new Probe(true, "available");
        } catch (LinkageError e) {
            return new Probe(false, "no CUDA driver (" + e.getClass().getSimpleName() + ": " + firstLine(e.getMessage()) + ")");
        } catch (CudaException e) {
            return new Probe(false, "CUDA driver cannot be initialised: " + firstLine(e.getMessage()));
        }
    }

    /** JCuda's load errors carry every attempted path and stack trace; the first line says what failed. */
    private static String firstLine(String message) {
        if (message == null) {
            return "no message";
        }
        int end = message.indexOf('\n');
        return (end < 0 ? message : message.substring(0, end)).strip();
    }
}
