// Append into the device KV cache and group quantize + pack (FORMAT.md sections 1-3).
//
// One launch per stream (keys or values) per append. The host (io.kvmix.cuda.DeviceStream) turns the
// append into jobs, one per (sequence, FP row matrix touched): a job writes the new token rows into an
// fp16 FP chunk [heads][G][D] (or into a sequence's sink rows [heads][S][D]) and, when the residual
// policy spills that chunk, quantizes the whole chunk into one packed block. Grid: (jobs, kvHeads);
// each CTA handles one head of one job.
//
// Built with -fmad=false, and every step of the quantizer spelled with an _rn intrinsic, so the codes
// and metadata are bit-identical to io.kvmix.core.quant.ScalarGroupQuantizer.
#include <cuda_fp16.h>
#include "kvmix_format.cuh"

namespace {

using kvmix::RUN;

// One job; the field order is written by io.kvmix.cuda.AppendJobs (48 bytes, little-endian).
struct AppendJob {
    unsigned long long rows;   // FP row matrix [heads][rowsPerHead][D] fp16 (a chunk, or one sequence's sinks)
    unsigned long long block;  // head 0's packed matrix of the block to quantize the chunk into; 0: no spill
    int rowsPerHead;           // G for a chunk, S for sink rows
    int rowFrom, rowTo;        // rows [rowFrom, rowTo) are written from the input
    int inputRow;              // input row of rowFrom
    int sequence;              // batch index
    int slot;                  // chunk/block index j of the sequence (token S + j*G is row 0); -1 for sinks
    int firstToken;            // sequence position of row 0 (error messages)
    int reserved;
};

// Error record (8 ints, host-readable): flag, kind, sequence, head, then
//   non-finite input:  token, channel, fp32 bits of the value
//   scale overflow:    first token of the block, first lane of the group, pack index (io.kvmix.core.quant.MatrixOrigin)
constexpr int ERROR_NON_FINITE = 1;
constexpr int ERROR_SCALE_OVERFLOW = 2;

__device__ void report(int* errors, int kind, int sequence, int head, int token, int channel, int detail) {
    if (atomicCAS(errors, 0, 1) == 0) {
        errors[1] = kind;
        errors[2] = sequence;
        errors[3] = head;
        errors[4] = token;
        errors[5] = channel;
        errors[6] = detail;
    }
}

// Java's Math.min / Math.max on fp32: -0 is below +0.
__device__ __forceinline__ float java_min(float a, float x) {
    return (x < a || (x == a && signbit(x))) ? x : a;
}
__device__ __forceinline__ float java_max(float a, float x) {
    return (x > a || (x == a && !signbit(x))) ? x : a;
}

// Geometry of one packed matrix (io.kvmix.core.quant.PackedLayout) over a shared fp16 tile [G][D + 2]
// holding the chunk (token rows): element (lane, pack) is tile[lane * laneStride + pack * packStride].
// Keys: lane = token (G), pack = channel (D), one group of G tokens per channel.
// Values: lane = channel (D), pack = token (G), groups of min(G, D) channels per token.
template <bool KEYS, int D>
struct MatrixShape {
    static constexpr int TILE_STRIDE = D + 2;  // +2 halves: column walks hit distinct banks
    int G;
    __device__ int laneLength() const { return KEYS ? G : D; }
    __device__ int packLength() const { return KEYS ? D : G; }
    __device__ int groupLength() const { return KEYS ? G : min(G, D); }
    __device__ static constexpr int laneStride() { return KEYS ? TILE_STRIDE : 1; }
    __device__ static constexpr int packStride() { return KEYS ? 1 : TILE_STRIDE; }
};

// FORMAT.md section 1 for every group, then section 3 packing. meta: [3][metaCount] fp32 scratch
// (scales, mins, 1 / scales).
template <int BITS, bool KEYS, int D>
__device__ void quantize_matrix(const __half* tile, const MatrixShape<KEYS, D> m, unsigned char* out, float* meta,
                                int* errors, const AppendJob& job, int head) {
    constexpr int maxCode = (1 << BITS) - 1;
    const int laneLength = m.laneLength();
    const int packLength = m.packLength();
    const int groupLength = m.groupLength();
    const int runs = (packLength + RUN - 1) / RUN;
    const int metaCount = packLength * (laneLength / groupLength);
    const long long codeBytes = 4LL * runs * BITS * laneLength;
    __half* scalesOut = reinterpret_cast<__half*>(out + codeBytes);
    __half* minsOut = scalesOut + metaCount;
    float* scales = meta;
    float* mins = meta + metaCount;
    float* inverseScales = meta + 2 * metaCount;

    // Section 1: min, max and scale of each group; metadata index [group][pack].
    for (int item = threadIdx.x; item < metaCount; item += blockDim.x) {
        const int pack = item % packLength;
        const int group = item / packLength;
        const int firstLane = group * groupLength;
        const __half* column = tile + pack * m.packStride();
        // fminf/fmaxf find the extremes' values; they may differ from Java's Math.min/max only in the sign of
        // a zero, so a group whose min or max is zero is walked again with Java's rules.
        float lo = __int_as_float(0x7F800000);   // +inf
        float hi = __int_as_float(0xFF800000);   // -inf
        for (int lane = firstLane; lane < firstLane + groupLength; lane++) {
            const float x = __half2float(column[lane * m.laneStride()]);
            lo = fminf(lo, x);
            hi = fmaxf(hi, x);
        }
        if (lo == 0.0f || hi == 0.0f) {
            lo = __int_as_float(0x7F800000);
            hi = __int_as_float(0xFF800000);
            for (int lane = firstLane; lane < firstLane + groupLength; lane++) {
                const float x = __half2float(column[lane * m.laneStride()]);
                lo = java_min(lo, x);
                hi = java_max(hi, x);
            }
        }
        const float scale = __fdiv_rn(__fsub_rn(hi, lo), (float) maxCode);
        const __half scale16 = __float2half_rn(scale);
        const float scaleValue = __half2float(scale16);
        if (isinf(scaleValue)) {
            report(errors, ERROR_SCALE_OVERFLOW, job.sequence, head, job.firstToken, firstLane, pack);
        }
        scalesOut[item] = scale16;
        minsOut[item] = __float2half_rn(lo);
        scales[item] = scaleValue;
        mins[item] = lo;
        inverseScales[item] = 1.0f / scaleValue;
    }
    __syncthreads();

    // Section 3: each thread packs one run of 32 codes of one lane into BITS words. The pack length (D or G)
    // is a multiple of 32 for the GPU cache's shapes, so every run is full; metadata comes 4 entries at a time.
    for (int item = threadIdx.x; item < runs * laneLength; item += blockDim.x) {
        const int run = item / laneLength;
        const int lane = item % laneLength;
        const int group = lane / groupLength;
        const __half* row = tile + lane * m.laneStride() + run * RUN * m.packStride();
        const int meta0 = group * packLength + run * RUN;
        uint32_t words[BITS] = {};
#pragma unroll
        for (int i = 0; i < RUN; i += 4) {
            const float4 scale4 = *reinterpret_cast<const float4*>(scales + meta0 + i);
            const float4 min4 = *reinterpret_cast<const float4*>(mins + meta0 + i);
            const float4 inverse4 = *reinterpret_cast<const float4*>(inverseScales + meta0 + i);
            const float scale[4] = {scale4.x, scale4.y, scale4.z, scale4.w};
            const float mn[4] = {min4.x, min4.y, min4.z, min4.w};
            const float inverse[4] = {inverse4.x, inverse4.y, inverse4.z, inverse4.w};
            float x[4];
            if constexpr (KEYS) {  // consecutive channels of one token: two 4-byte loads
                const float2 a = __half22float2(*reinterpret_cast<const __half2*>(row + i));
                const float2 b = __half22float2(*reinterpret_cast<const __half2*>(row + i + 2));
                x[0] = a.x; x[1] = a.y; x[2] = b.x; x[3] = b.y;
            } else {
#pragma unroll
                for (int e = 0; e < 4; e++) x[e] = __half2float(row[(i + e) * m.packStride()]);
            }
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float d = __fsub_rn(x[e], mn[e]);
                // y = fl(fl(d / scale) + 0.5) and code = floor(y) as FORMAT.md says. A multiply by 1/scale is
                // within a few ulps (< 1e-5 for y < 17) of the quotient, so it gives the same floor unless
                // y lands within 1e-4 of an integer; only then is the IEEE division worth its cost.
                // floor(y) without conversion instructions: y >= 0 (d >= 0), and for y < 2^23 the sum y + 2^23
                // rounded toward zero is 2^23 + floor(y) exactly, floor(y) in its low mantissa bits; a larger y
                // gives more than maxCode either way.
                const float y = __fadd_rn(__fmul_rn(d, inverse[e]), 0.5f);
                float floorBits = __fadd_rz(y, kvmix::TWO_POW_23);
                const float fraction = __fsub_rn(y, __fsub_rn(floorBits, kvmix::TWO_POW_23));
                if (scale[e] != 0.0f && (fraction < 1e-4f || fraction > 1.0f - 1e-4f)) {
                    floorBits = __fadd_rz(__fadd_rn(__fdiv_rn(d, scale[e]), 0.5f), kvmix::TWO_POW_23);
                }
                const int floorY = __float_as_int(floorBits) - __float_as_int(kvmix::TWO_POW_23);
                const uint32_t code = scale[e] == 0.0f ? 0u : (uint32_t) min(maxCode, max(0, floorY));
                kvmix::run_put<BITS>(words, i + e, code);
            }
        }
        uint32_t* wordsOut = reinterpret_cast<uint32_t*>(out);
#pragma unroll
        for (int k = 0; k < BITS; k++) {
            wordsOut[(run * BITS + k) * laneLength + lane] = words[k];
        }
    }
}

template <bool KEYS, int D>
__device__ void quantize_chunk(const __half* tile, int groupSize, int bits, unsigned char* out, float* meta,
                               int* errors, const AppendJob& job, int head) {
    const MatrixShape<KEYS, D> m{groupSize};
    switch (bits) {
        case 1: quantize_matrix<1, KEYS, D>(tile, m, out, meta, errors, job, head); break;
        case 2: quantize_matrix<2, KEYS, D>(tile, m, out, meta, errors, job, head); break;
        case 3: quantize_matrix<3, KEYS, D>(tile, m, out, meta, errors, job, head); break;
        default: quantize_matrix<4, KEYS, D>(tile, m, out, meta, errors, job, head); break;
    }
}

__device__ __forceinline__ bool fp16_finite(float x) {
    return fabsf(x) < 65520.0f;  // NaN compares false; |x| >= 65520 rounds to inf in fp16
}

// Everything about one stream of one cache that does not change between appends; written once by
// io.kvmix.cuda.cache.DeviceStream (field order and sizes are that writer's, little-endian).
struct AppendParams {
    unsigned long long* fpTable;     // [batch][tableStride] device address of each sequence's FP chunk j
    unsigned long long* blockTable;  // [batch][tableStride] device address of head 0's matrix of block j
    int* errors;                     // 8 ints, see report()
    long long headStride;            // bytes between the matrices of consecutive heads of one block
    int tableStride;
    int inputRowStride;              // elements per input row: kvHeads * D
    int headDim;
    int groupSize;
    int bits;
    int keys;                        // 1: keys (per-channel groups), 0: values (per-token groups)
};

}  // namespace

// jobs:   the append's jobs, one CTA per (job, kv head)
// input:  new token rows [rows][kvHeads * D], fp16 if inputHalf else fp32; head h's channels at h * D
extern "C" __global__ void __launch_bounds__(128, 8)  // 8 CTAs per SM: 64 registers, no spills
kvmix_append_stream(const AppendJob* __restrict__ jobs, const void* __restrict__ input, int inputHalf,
                    const AppendParams* __restrict__ params) {
    extern __shared__ float shared[];
    const AppendParams p = *params;
    const AppendJob job = jobs[blockIdx.x];
    const int head = blockIdx.y;
    const int D = p.headDim;
    const int tileStride = D + 2;  // +2 halves: column walks hit distinct banks
    __half* __restrict__ rows = reinterpret_cast<__half*>(job.rows) + (size_t) head * job.rowsPerHead * D;
    const bool spill = job.block != 0;
    __half* tile = reinterpret_cast<__half*>(shared);

    // New rows go to the FP chunk; a spilled chunk is also gathered whole into the tile. 8 channels
    // (16 bytes of fp16) per vector; each thread loads VECTORS_IN_FLIGHT vectors before it stores any, so
    // their memory latencies overlap.
    constexpr int VECTORS_IN_FLIGHT = 4;
    const int firstRow = spill ? 0 : job.rowFrom;
    const int lastRow = spill ? job.rowsPerHead : job.rowTo;
    const int vectorsPerRow = D / 8;
    const int vectorCount = (lastRow - firstRow) * vectorsPerRow;
    for (int base = threadIdx.x; base < vectorCount; base += VECTORS_IN_FLIGHT * blockDim.x) {
        uint4 loaded[VECTORS_IN_FLIGHT][2];  // fp16 rows: [k][0]; fp32 input: channels 0-3 in [k][0], 4-7 in [k][1]
#pragma unroll
        for (int k = 0; k < VECTORS_IN_FLIGHT; k++) {
            const int idx = base + k * blockDim.x;
            if (idx >= vectorCount) break;
            const int row = firstRow + idx / vectorsPerRow;
            const int channel = (idx % vectorsPerRow) * 8;
            if (row >= job.rowFrom && row < job.rowTo) {
                const size_t at = (size_t) (job.inputRow + row - job.rowFrom) * p.inputRowStride + (size_t) head * D + channel;
                if (inputHalf) {
                    loaded[k][0] = *reinterpret_cast<const uint4*>(reinterpret_cast<const __half*>(input) + at);
                } else {
                    const uint4* src = reinterpret_cast<const uint4*>(reinterpret_cast<const float*>(input) + at);
                    loaded[k][0] = src[0];
                    loaded[k][1] = src[1];
                }
            } else {
                loaded[k][0] = *reinterpret_cast<const uint4*>(rows + (size_t) row * D + channel);
            }
        }
#pragma unroll
        for (int k = 0; k < VECTORS_IN_FLIGHT; k++) {
            const int idx = base + k * blockDim.x;
            if (idx >= vectorCount) break;
            const int row = firstRow + idx / vectorsPerRow;
            const int channel = (idx % vectorsPerRow) * 8;
            uint4 eight = loaded[k][0];
            if (row >= job.rowFrom && row < job.rowTo) {
                float x[8];
                if (inputHalf) {
                    const __half2* h = reinterpret_cast<const __half2*>(&eight);
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const float2 f = __half22float2(h[e]);
                        x[2 * e] = f.x;
                        x[2 * e + 1] = f.y;
                    }
                } else {
                    const float4 a = *reinterpret_cast<const float4*>(&loaded[k][0]);
                    const float4 b = *reinterpret_cast<const float4*>(&loaded[k][1]);
                    x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
                    x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
                    __half2* h = reinterpret_cast<__half2*>(&eight);
#pragma unroll
                    for (int e = 0; e < 4; e++) h[e] = __halves2half2(__float2half_rn(x[2 * e]), __float2half_rn(x[2 * e + 1]));
                }
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    if (!fp16_finite(x[e])) {
                        report(p.errors, ERROR_NON_FINITE, job.sequence, head, job.firstToken + row, channel + e,
                               __float_as_int(x[e]));
                    }
                }
                *reinterpret_cast<uint4*>(rows + (size_t) row * D + channel) = eight;
            }
            if (spill) {
                const __half2* h = reinterpret_cast<const __half2*>(&eight);
                __half2* dst = reinterpret_cast<__half2*>(tile + row * tileStride + channel);
#pragma unroll
                for (int e = 0; e < 4; e++) dst[e] = h[e];
            }
        }
    }
    if (head == 0 && threadIdx.x == 0 && job.slot >= 0) {
        p.fpTable[(size_t) job.sequence * p.tableStride + job.slot] = job.rows;
        if (spill) {
            p.blockTable[(size_t) job.sequence * p.tableStride + job.slot] = job.block;
        }
    }
    if (!spill) {
        return;
    }
    __syncthreads();

    // Head dims of the GPU cache (io.kvmix.cuda.cache.DeviceBatchKvCache.HEAD_DIMS) are compile-time here.
    float* meta = shared + (job.rowsPerHead * (D + 2) + 1) / 2;
    unsigned char* out = reinterpret_cast<unsigned char*>(job.block) + head * p.headStride;
    if (p.keys) {
        if (D == 64) quantize_chunk<true, 64>(tile, job.rowsPerHead, p.bits, out, meta, p.errors, job, head);
        else quantize_chunk<true, 128>(tile, job.rowsPerHead, p.bits, out, meta, p.errors, job, head);
    } else {
        if (D == 64) quantize_chunk<false, 64>(tile, job.rowsPerHead, p.bits, out, meta, p.errors, job, head);
        else quantize_chunk<false, 128>(tile, job.rowsPerHead, p.bits, out, meta, p.errors, job, head);
    }
}
