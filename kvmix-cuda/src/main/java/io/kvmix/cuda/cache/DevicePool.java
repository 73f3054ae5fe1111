package io.kvmix.cuda.cache;

import io.kvmix.cuda.CudaDevice;
import io.kvmix.cuda.DeviceBuffer;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;

/**
 * Fixed-size device slots (FP chunks or pages of packed blocks) carved from slabs of about
 * {@link #SLAB_BYTES} bytes: one {@code cuMemAlloc} serves many slots, freed slots are reused, and all
 * slabs are freed by {@link #close()}.
 */
final class DevicePool implements AutoCloseable {
    static final long SLAB_BYTES = 64L << 20;

    private final CudaDevice device;
    private final long slotBytes;
    private final int slotsPerSlab;
    private final String what;
    private final List<DeviceBuffer> slabs = new ArrayList<>();
    private final ArrayDeque<Long> free = new ArrayDeque<>();

    DevicePool(CudaDevice device, long slotBytes, String what) {
        this.device = device;
        this.slotBytes = slotBytes;
        this.slotsPerSlab = (int) Math.max(1, SLAB_BYTES / slotBytes);
        this.what = what;
    }

    long slotBytes() {
        return slotBytes;
    }

    /** Device address of a free slot (contents undefined), allocating a slab when none is free. */
    long take() {
        if (free.isEmpty()) {
            DeviceBuffer slab = device.allocate(slotBytes * slotsPerSlab, slotsPerSlab + " " + what + " of "
                    + slotBytes + " bytes");
            slabs.add(slab);
            for (int i = 0; i < slotsPerSlab; i++) {
                free.addLast(slab.address() + i * slotBytes);
            }
        }
        return free.pollFirst();
    }

    void give(long address) {
        free.addFirst(address);
    }

    /** Bytes held from the device (live and free slots). */
    long reservedBytes() {
        return slabs.size() * slotBytes * slotsPerSlab;
    }

    @Override
    public void close() {
        slabs.forEach(DeviceBuffer::close);
        slabs.clear();
        free.clear();
    }
}
