package io.kvmix.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Device allocations: a failure says what was asked for and what was free. */
class DeviceMemoryTest {

    @Test
    void failedAllocationNamesRequestedAndFreeBytes() {
        CudaDevice device = GpuTests.device();
        long[] info = device.memoryInfo();
        long tooMuch = info[1] * 4;  // four times the device's memory
        DeviceMemoryException e = assertThrows(DeviceMemoryException.class,
                () -> device.allocate(tooMuch, "an oversized test buffer"));
        assertEquals(tooMuch, e.requestedBytes());
        assertTrue(e.freeBytes() > 0 && e.freeBytes() <= info[1], "free bytes " + e.freeBytes());
        assertTrue(e.getMessage().startsWith("cannot allocate " + tooMuch + " bytes of GPU memory for an oversized test buffer: "),
                e.getMessage());
    }

    @Test
    void buffersRoundTripAndRejectOutOfRangeCopies() {
        CudaDevice device = GpuTests.device();
        try (DeviceBuffer a = device.allocate(64, "test a"); DeviceBuffer b = device.allocate(64, "test b")) {
            float[] values = new float[16];
            for (int i = 0; i < values.length; i++) {
                values[i] = i * 0.5f;
            }
            a.upload(values, values.length);
            b.copyFrom(a, 64);
            float[] back = new float[16];
            b.download(back, back.length);
            assertEquals(java.util.Arrays.toString(values), java.util.Arrays.toString(back));
            assertThrows(IndexOutOfBoundsException.class, () -> a.upload(new float[32], 32));
        }
    }
}
