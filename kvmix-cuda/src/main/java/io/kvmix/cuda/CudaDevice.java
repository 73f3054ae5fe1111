package io.kvmix.cuda;

import jcuda.CudaException;
import jcuda.Pointer;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdevice_attribute;
import jcuda.driver.CUevent;
import jcuda.driver.CUfunction;
import jcuda.driver.CUfunction_attribute;
import jcuda.driver.CUgraph;
import jcuda.driver.CUgraphExec;
import jcuda.driver.CUmodule;
import jcuda.driver.CUstream;
import jcuda.driver.CUstreamCaptureMode;
import jcuda.driver.JCudaDriver;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * One GPU: its primary context, one stream that every kvmix operation runs on (so operations are
 * ordered), and the kvmix kernels. PTX modules are loaded once from the classpath (sm_90 PTX on
 * devices of compute capability 9.0 and above, else sm_80) and functions are looked up once.
 * Obtained from {@link CudaRuntime#device()}; lives as long as the process.
 */
public final class CudaDevice {
    private final int ordinal;
    private final CUcontext context;
    private final CUstream stream;
    private final String name;
    private final int computeMajor;
    private final int computeMinor;
    private final int multiprocessors;
    /** Shared memory one CTA may use when it opts in (227 KiB on an H100/H200). */
    private final int maxSharedPerCta;
    private final Map<String, CUmodule> modules = new ConcurrentHashMap<>();
    private final Map<String, Integer> moduleInts = new ConcurrentHashMap<>();
    private final Map<String, CUfunction> functions = new ConcurrentHashMap<>();

    private CudaDevice(int ordinal, CUcontext context, CUstream stream, String name, int major, int minor, int sms,
                       int maxSharedPerCta) {
        this.maxSharedPerCta = maxSharedPerCta;
        this.ordinal = ordinal;
        this.context = context;
        this.stream = stream;
        this.name = name;
        this.computeMajor = major;
        this.computeMinor = minor;
        this.multiprocessors = sms;
    }

    static CudaDevice open(int ordinal) {
        CUdevice device = new CUdevice();
        JCudaDriver.cuDeviceGet(device, ordinal);
        CUcontext context = new CUcontext();
        JCudaDriver.cuDevicePrimaryCtxRetain(context, device);
        JCudaDriver.cuCtxSetCurrent(context);
        CUstream stream = new CUstream();
        JCudaDriver.cuStreamCreate(stream, 0);
        byte[] nameBytes = new byte[256];
        JCudaDriver.cuDeviceGetName(nameBytes, nameBytes.length, device);
        int nameLength = 0;
        while (nameLength < nameBytes.length && nameBytes[nameLength] != 0) {
            nameLength++;
        }
        return new CudaDevice(ordinal, context, stream, new String(nameBytes, 0, nameLength),
                attribute(device, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                attribute(device, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
                attribute(device, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
                attribute(device, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN));
    }

    private static int attribute(CUdevice device, int attribute) {
        int[] value = {0};
        JCudaDriver.cuDeviceGetAttribute(value, attribute, device);
        return value[0];
    }

    public String name() {
        return name;
    }

    public int ordinal() {
        return ordinal;
    }

    /** "9.0" for an H100/H200. */
    public String computeCapability() {
        return computeMajor + "." + computeMinor;
    }

    public int multiprocessors() {
        return multiprocessors;
    }

    /** The most shared memory (static + dynamic) one CTA may opt in to, in bytes. */
    public int maxSharedPerCta() {
        return maxSharedPerCta;
    }

    /** The PTX target loaded for this device: sm_90 from compute capability 9.0 up, else sm_80. */
    public String ptxArch() {
        return ptxArch(computeMajor);
    }

    static String ptxArch(int computeMajor) {
        return computeMajor >= 9 ? "sm_90" : "sm_80";
    }

    /** Makes this device's context current on the calling thread (every entry point calls it). */
    public void bind() {
        JCudaDriver.cuCtxSetCurrent(context);
    }

    public CUstream stream() {
        return stream;
    }

    public void synchronize() {
        bind();
        JCudaDriver.cuStreamSynchronize(stream);
    }

    /** {free, total} device memory in bytes. */
    public long[] memoryInfo() {
        bind();
        long[] free = {0};
        long[] total = {0};
        JCudaDriver.cuMemGetInfo(free, total);
        return new long[] {free[0], total[0]};
    }

    /** Copies {@code bytes} bytes from device address {@code address} (after the stream's pending work). */
    public MemorySegment download(long address, long bytes) {
        synchronize();
        MemorySegment host = Arena.ofAuto().allocate(bytes, 16);
        JCudaDriver.cuMemcpyDtoH(Pointer.to(host.asByteBuffer()), new CUdeviceptr().withByteOffset(address), bytes);
        return host;
    }

    /**
     * Allocates {@code bytes} bytes.
     *
     * @param what what the memory is for, named in the error
     * @throws DeviceMemoryException naming the bytes asked for and the bytes free when the allocation fails
     */
    public DeviceBuffer allocate(long bytes, String what) {
        if (bytes <= 0) {
            throw new IllegalArgumentException(what + ": allocation of " + bytes + " bytes");
        }
        bind();
        DeviceBuffer.AddressedPointer pointer = new DeviceBuffer.AddressedPointer();
        try {
            JCudaDriver.cuMemAlloc(pointer, bytes);
        } catch (CudaException e) {
            long[] info = memoryInfo();
            throw new DeviceMemoryException(what, bytes, info[0], info[1], e);
        }
        return new DeviceBuffer(this, pointer, bytes);
    }

    /**
     * The kernel {@code kernel} of {@code module} (a .cu file of src/main/cuda, e.g. "quantize_pack"),
     * loading the module's PTX on first use.
     */
    public CUfunction kernel(String module, String kernel) {
        return functions.computeIfAbsent(kernel, k -> {
            bind();
            CUfunction function = new CUfunction();
            JCudaDriver.cuModuleGetFunction(function, modules.computeIfAbsent(module, this::load), k);
            // let every launch use all the shared memory a CTA may opt in to (the default cap is 48 KiB,
            // static + dynamic); launches pass their dynamic size
            int[] staticBytes = {0};
            JCudaDriver.cuFuncGetAttribute(staticBytes, CUfunction_attribute.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, function);
            JCudaDriver.cuFuncSetAttribute(function, CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    maxSharedPerCta - staticBytes[0]);
            return function;
        });
    }

    /**
     * The value of an {@code int} global that module {@code module} exports (an {@code extern "C" __device__ int}),
     * read once: how host code learns a layout fact that the kernels define.
     */
    public int moduleInt(String module, String name) {
        return moduleInts.computeIfAbsent(module + "/" + name, key -> {
            bind();
            CUdeviceptr at = new CUdeviceptr();
            long[] bytes = {0};
            JCudaDriver.cuModuleGetGlobal(at, bytes, modules.computeIfAbsent(module, this::load), name);
            if (bytes[0] != Integer.BYTES) {
                throw new IllegalStateException(module + " exports " + name + " with " + bytes[0] + " bytes, expected an int");
            }
            int[] value = {0};
            JCudaDriver.cuMemcpyDtoH(Pointer.to(value), at, Integer.BYTES);
            return value[0];
        });
    }

    private CUmodule load(String module) {
        String resource = "ptx/" + module + "." + ptxArch() + ".ptx";
        byte[] ptx;
        try (InputStream in = CudaDevice.class.getResourceAsStream(resource)) {
            if (in == null) {
                throw new IllegalStateException("PTX resource io/kvmix/cuda/" + resource + " is missing from the jar");
            }
            ptx = in.readAllBytes();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read PTX resource " + resource, e);
        }
        CUmodule handle = new CUmodule();
        JCudaDriver.cuModuleLoadData(handle, Arrays.copyOf(ptx, ptx.length + 1));  // NUL-terminated
        return handle;
    }

    /** CTAs of {@code threads} threads and {@code dynamicSharedBytes} that one multiprocessor can hold at once. */
    public int residentCtas(CUfunction function, int threads, int dynamicSharedBytes) {
        bind();
        int[] ctas = {0};
        JCudaDriver.cuOccupancyMaxActiveBlocksPerMultiprocessor(ctas, function, threads, dynamicSharedBytes);
        return ctas[0];
    }

    /**
     * Launches {@code function} on this device's stream.
     *
     * @param params one array per kernel parameter: {@code long[]{address}} for pointers, {@code int[]}, {@code float[]}
     */
    public void launch(CUfunction function, int[] grid, int threads, int dynamicSharedBytes, Object... params) {
        Pointer[] pointers = new Pointer[params.length];
        for (int i = 0; i < params.length; i++) {
            pointers[i] = switch (params[i]) {
                case long[] l -> Pointer.to(l);
                case int[] n -> Pointer.to(n);
                case float[] f -> Pointer.to(f);
                default -> throw new IllegalArgumentException("kernel parameter " + i + ": " + params[i]);
            };
        }
        bind();
        JCudaDriver.cuLaunchKernel(function, grid[0], grid[1], grid[2], threads, 1, 1, dynamicSharedBytes, stream,
                Pointer.to(pointers), null);
    }

    /**
     * Records the work {@code enqueue} puts on this device's stream into a CUDA graph instead of running it;
     * {@link Graph#launch()} then replays it with one driver call (no per-kernel launch overhead).
     */
    public Graph capture(Runnable enqueue) {
        bind();
        JCudaDriver.cuStreamBeginCapture(stream, CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
        CUgraph graph = new CUgraph();
        try {
            enqueue.run();
        } finally {
            JCudaDriver.cuStreamEndCapture(stream, graph);
        }
        CUgraphExec exec = new CUgraphExec();
        JCudaDriver.cuGraphInstantiate(exec, graph, 0);
        return new Graph(this, graph, exec);
    }

    /** A captured and instantiated CUDA graph, destroyed by {@link #close()}. */
    public static final class Graph implements AutoCloseable {
        private final CudaDevice device;
        private final CUgraph graph;
        private final CUgraphExec exec;

        private Graph(CudaDevice device, CUgraph graph, CUgraphExec exec) {
            this.device = device;
            this.graph = graph;
            this.exec = exec;
        }

        /** Enqueues the recorded work on the device's stream. */
        public void launch() {
            device.bind();
            JCudaDriver.cuGraphLaunch(exec, device.stream());
        }

        @Override
        public void close() {
            device.bind();
            JCudaDriver.cuGraphExecDestroy(exec);
            JCudaDriver.cuGraphDestroy(graph);
        }
    }

    /** A pair of CUDA events timing work on this device's stream. */
    public EventTimer timer() {
        bind();
        return new EventTimer(this);
    }

    /** Times stream work with CUDA events: {@link #start()}, enqueue work, {@link #stopMillis()}. */
    public static final class EventTimer implements AutoCloseable {
        private final CudaDevice device;
        private final CUevent start = new CUevent();
        private final CUevent stop = new CUevent();

        private EventTimer(CudaDevice device) {
            this.device = device;
            JCudaDriver.cuEventCreate(start, 0);
            JCudaDriver.cuEventCreate(stop, 0);
        }

        public void start() {
            device.bind();
            JCudaDriver.cuEventRecord(start, device.stream());
        }

        /** Records the stop event, waits for it and returns the milliseconds between the two events. */
        public float stopMillis() {
            device.bind();
            JCudaDriver.cuEventRecord(stop, device.stream());
            JCudaDriver.cuEventSynchronize(stop);
            float[] millis = {0};
            JCudaDriver.cuEventElapsedTime(millis, start, stop);
            return millis[0];
        }

        @Override
        public void close() {
            device.bind();
            JCudaDriver.cuEventDestroy(start);
            JCudaDriver.cuEventDestroy(stop);
        }
    }
}
