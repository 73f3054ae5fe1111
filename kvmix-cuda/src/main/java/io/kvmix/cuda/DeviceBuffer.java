package io.kvmix.cuda;

import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.JCudaDriver;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** One device allocation ({@code cuMemAlloc}), freed by {@link #close()}. */
public final class DeviceBuffer implements AutoCloseable {
    private final CudaDevice device;
    private final AddressedPointer pointer;
    private final long bytes;
    private boolean open = true;

    /** A {@link CUdeviceptr} that tells its numeric address (stored in device-side tables, passed to kernels). */
    static final class AddressedPointer extends CUdeviceptr {
        AddressedPointer() {
        }

        private AddressedPointer(AddressedPointer base, long byteOffset) {
            super(base, byteOffset);
        }

        long address() {
            return getNativePointer() + getByteOffset();
        }

        AddressedPointer at(long byteOffset) {
            return new AddressedPointer(this, byteOffset);
        }
    }

    DeviceBuffer(CudaDevice device, AddressedPointer pointer, long bytes) {
        this.device = device;
        this.pointer = pointer;
        this.bytes = bytes;
    }

    public long bytes() {
        return bytes;
    }

    /** The device address of byte 0 (what a kernel parameter or a device-side table holds). */
    public long address() {
        checkOpen();
        return pointer.address();
    }

    /** A driver pointer to byte {@code offset}. */
    public CUdeviceptr pointer(long offset) {
        checkOpen();
        return offset == 0 ? pointer : pointer.at(offset);
    }

    public void upload(float[] src, int count) {
        upload(Pointer.to(src), 4L * count, 0);
    }

    public void upload(short[] src, int count) {
        upload(Pointer.to(src), 2L * count, 0);
    }

    /** Copies {@code count} bytes of a direct buffer to byte {@code offset} (synchronous with the device's stream). */
    public void upload(ByteBuffer src, long count, long offset) {
        upload(Pointer.to(src), count, offset);
    }

    private void upload(Pointer src, long count, long offset) {
        checkRange(offset, count);
        device.bind();
        JCudaDriver.cuMemcpyHtoDAsync(pointer(offset), src, count, device.stream());
        device.synchronize();
    }

    public void download(float[] dst, int count) {
        download(Pointer.to(dst), 4L * count, 0);
    }

    public void download(int[] dst, int count) {
        download(Pointer.to(dst), 4L * count, 0);
    }

    /** {@code count} bytes from byte {@code offset}, little-endian. */
    public ByteBuffer download(long offset, int count) {
        ByteBuffer dst = ByteBuffer.allocateDirect(count).order(ByteOrder.LITTLE_ENDIAN);
        download(Pointer.to(dst), count, offset);
        return dst;
    }

    private void download(Pointer dst, long count, long offset) {
        checkRange(offset, count);
        device.bind();
        device.synchronize();
        JCudaDriver.cuMemcpyDtoH(dst, pointer(offset), count);
    }

    /** Copies the first {@code count} bytes of {@code source} here (device to device, in stream order). */
    public void copyFrom(DeviceBuffer source, long count) {
        checkRange(0, count);
        source.checkRange(0, count);
        device.bind();
        JCudaDriver.cuMemcpyDtoDAsync(pointer, source.pointer, count, device.stream());
    }

    /** Sets every byte to zero (in stream order). */
    public void clear() {
        device.bind();
        JCudaDriver.cuMemsetD8Async(pointer, (byte) 0, bytes, device.stream());
    }

    private void checkRange(long offset, long count) {
        checkOpen();
        if (offset < 0 || count < 0 || offset + count > bytes) {
            throw new IndexOutOfBoundsException("device buffer of " + bytes + " bytes: bytes " + offset + ".."
                    + (offset + count) + " requested");
        }
    }

    private void checkOpen() {
        if (!open) {
            throw new IllegalStateException("device buffer of " + bytes + " bytes is closed");
        }
    }

    @Override
    public void close() {
        if (open) {
            open = false;
            device.bind();
            JCudaDriver.cuMemFree(pointer);
        }
    }
}
