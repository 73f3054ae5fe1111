package io.kvmix.cuda;

import org.junit.jupiter.api.Assumptions;

/** Entry point of every GPU test: the device, or the test is skipped with the reason there is none. */
public final class GpuTests {
    private GpuTests() {
    }

    public static CudaDevice device() {
        Assumptions.assumeTrue(CudaRuntime.isAvailable(), () -> "no GPU: " + CudaRuntime.unavailableReason());
        return CudaRuntime.device();
    }
}
