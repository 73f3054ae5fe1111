package io.kvmix.cuda;

import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.plan.LayerQuant;
import io.kvmix.cuda.cache.BatchKvCache;
import io.kvmix.cuda.cache.HostBatchKvCache;
import io.kvmix.cuda.cache.KvCaches;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Runs on every machine: with a GPU the GPU path is chosen, without one everything degrades cleanly to the CPU. */
class CudaRuntimeTest {
    private static final KvGeometry GEOMETRY = new KvGeometry(2, 64, 256, 0);

    @Test
    void availabilityIsDecidedWithoutThrowing() {
        boolean available = CudaRuntime.isAvailable();
        assertEquals(available, CudaRuntime.isAvailable());
        if (available) {
            assertEquals("available", CudaRuntime.unavailableReason());
        } else {
            assertFalse(CudaRuntime.unavailableReason().isBlank());
            IllegalStateException e = assertThrows(IllegalStateException.class, CudaRuntime::device);
            assertTrue(e.getMessage().contains(CudaRuntime.unavailableReason()), e.getMessage());
        }
    }

    @Test
    void gpuCacheRequestFallsBackToTheCpuWithoutAGpu() {
        try (BatchKvCache cache = KvCaches.create(KvCaches.Placement.GPU, GEOMETRY, 3, LayerQuant.reference(2, 2), 32, 2)) {
            assertEquals(CudaRuntime.isAvailable(), cache.onDevice());
            if (!CudaRuntime.isAvailable()) {
                assertInstanceOf(HostBatchKvCache.class, cache);
            }
            float[] rows = new float[5 * GEOMETRY.rowWidth()];
            cache.append(rows, rows, new int[] {3, 2});
            assertEquals(3, cache.length(0));
            assertEquals(2, cache.length(1));
        }
    }

    @Test
    void unsupportedShapeFallsBackToTheCpu() {
        KvGeometry headDim80 = new KvGeometry(2, 80, 256, 0);
        try (BatchKvCache cache = KvCaches.create(KvCaches.Placement.GPU, headDim80, 0, LayerQuant.reference(2, 2), 160, 1)) {
            assertFalse(cache.onDevice());
        }
    }

    @Test
    void cpuPlacementIsHonoured() {
        try (BatchKvCache cache = KvCaches.create(KvCaches.Placement.CPU, GEOMETRY, 0, LayerQuant.reference(4, 4), 32, 1)) {
            assertFalse(cache.onDevice());
        }
    }
}
