// DeviceBench's multiprocessor occupier (--occupy-sms N): N CTAs that each take a whole multiprocessor's shared
// memory and wait until the host releases them, so that the kernels timed meanwhile run on the other
// multiprocessors only. Holding 40 of an H100's 132 leaves each free multiprocessor about the copy bandwidth
// per multiprocessor of an H200 (4.8 vs 3.35 TB/s peak on 132): where a kernel that waits on memory latency
// behaves as it would there.
//
// state: [0] release flag (the host writes nonzero), [1] CTAs resident so far (the host waits for N).
extern "C" __global__ void kvmix_bench_occupy(volatile int* state) {
    if (threadIdx.x == 0) {
        atomicAdd(const_cast<int*>(&state[1]), 1);
        while (state[0] == 0) __nanosleep(1000);
    }
}
