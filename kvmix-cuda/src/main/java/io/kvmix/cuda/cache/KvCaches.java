package io.kvmix.cuda.cache;

import io.kvmix.core.cache.KvGeometry;
import io.kvmix.core.plan.LayerQuant;
import io.kvmix.cuda.CudaRuntime;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Picks where a layer's batch cache lives: the GPU when asked for and usable, else the CPU (and says why). */
public final class KvCaches {
    private static final Logger LOG = LoggerFactory.getLogger(KvCaches.class);

    /** Where the caller would like the cache. */
    public enum Placement {
        CPU,
        /** The GPU if CUDA is available and the kernels support the shape, else the CPU with a log line. */
        GPU
    }

    private KvCaches() {
    }

    public static BatchKvCache create(Placement placement, KvGeometry geometry, int layer, LayerQuant quant,
                                      int groupSize, int batch) {
        if (placement == Placement.GPU) {
            if (!CudaRuntime.isAvailable()) {
                LOG.warn("layer {}: GPU KV cache requested but {}; using the CPU cache", layer,
                        CudaRuntime.unavailableReason());
            } else if (!DeviceBatchKvCache.supports(geometry, groupSize)) {
                LOG.warn("layer {}: the GPU kernels support head_dim {} (got {}), group size a multiple of 32 (got {});"
                        + " using the CPU cache", layer, DeviceBatchKvCache.HEAD_DIMS, geometry.headDim(), groupSize);
            } else {
                return new DeviceBatchKvCache(CudaRuntime.device(), geometry, layer, quant, groupSize, batch);
            }
        }
        return new HostBatchKvCache(geometry, layer, quant, groupSize, batch);
    }
}
