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

// clamp(floor(y), 0, 2^BITS - 1) without conversion instructions: y >= 0 (d >= 0), and for y < 2^23 the sum
// y + 2^23 rounded toward zero is 2^23 + floor(y) exactly, floor(y) in its low mantissa bits; a larger y gives
// more than the largest code either way.
template <int BITS>
__device__ __forceinline__ uint32_t code_of(float y) {
    const int floorY = __float_as_int(__fadd_rz(y, kvmix::TWO_POW_23)) - __float_as_int(kvmix::TWO_POW_23);
    return (uint32_t) min((1 << BITS) - 1, max(0, floorY));
}

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
        // a zero scale (all of the group's values equal, or closer than fp16 resolves) gives code 0 for all: with
        // 1/scale taken as 0, y below is 0.5 whatever d is
        inverseScales[item] = scaleValue == 0.0f ? 0.0f : 1.0f / scaleValue;
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
        uint32_t exact = 0;  // codes whose y lies within 1e-4 of an integer: redone with the IEEE division below
#pragma unroll
        for (int i = 0; i < RUN; i += 4) {
            const float4 min4 = *reinterpret_cast<const float4*>(mins + meta0 + i);
            const float4 inverse4 = *reinterpret_cast<const float4*>(inverseScales + meta0 + i);
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
                // y = fl(fl(d / scale) + 0.5) and code = floor(y) as FORMAT.md says. A multiply by 1/scale is
                // within a few ulps (< 1e-5 for y < 17) of the quotient, so it gives the same floor unless
                // y lands within 1e-4 of an integer; only those codes (rare) are redone with the division.
                const float y = __fadd_rn(__fmul_rn(__fsub_rn(x[e], mn[e]), inverse[e]), 0.5f);
                const float fraction = __fsub_rn(y, __fsub_rn(__fadd_rz(y, kvmix::TWO_POW_23), kvmix::TWO_POW_23));
                if (fraction < 1e-4f || fraction > 1.0f - 1e-4f) exact |= 1u << (i + e);
                kvmix::run_put<BITS>(words, i + e, code_of<BITS>(y));
            }
        }
        while (exact != 0) {
            const int i = __ffs(exact) - 1;
            exact &= exact - 1;
            const float x = __half2float(row[i * m.packStride()]);
            const float d = __fsub_rn(x, mins[meta0 + i]);
            kvmix::run_set<BITS>(words, i, code_of<BITS>(__fadd_rn(__fdiv_rn(d, scales[meta0 + i]), 0.5f)));
        }
        uint32_t* wordsOut = reinterpret_cast<uint32_t*>(out);
#pragma unroll
        for (int k = 0; k < BITS; k++) {
            wordsOut[(run * BITS + k) * laneLength + lane] = words[k];
        }
    }
}

__device__ __forceinline__ bool fp16_finite(float x) {
    return fabsf(x) < 65520.0f;  // NaN compares false; |x| >= 65520 rounds to inf in fp16
}

// True when all 8 fp16 values of v are finite. An fp16 is inf or NaN exactly when its exponent bits are all set;
// adding 0x0400 to the exponent bits alone (0x7C00 at most) carries into bit 15 of that half exactly then, and
// never into the next half.
__device__ __forceinline__ bool all_fp16_finite(const uint4& v) {
    constexpr uint32_t EXPONENTS = 0x7C007C00u;
    constexpr uint32_t CARRY = 0x04000400u;
    const uint32_t sums = ((v.x & EXPONENTS) + CARRY) | ((v.y & EXPONENTS) + CARRY) | ((v.z & EXPONENTS) + CARRY)
            | ((v.w & EXPONENTS) + CARRY);
    return (sums & 0x80008000u) == 0;
}

// Everything about one stream of one cache that does not change between appends; written once by
// io.kvmix.cuda.cache.DeviceStream (field order and sizes are that writer's, little-endian). The kernel
// instance fixes the stream kind, D and the width; headDim, groupSize, bits and keys restate them.
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

// One head of one job: what the CTA writes and, when the chunk spills, quantizes.
struct WorkItem {
    AppendJob job;
    int head;
    __half* rows;     // the head's FP rows [rowsPerHead][D]
    int firstRow;     // rows [firstRow, firstRow + vectorCount / (D / 8)) pass through the tile or the input
    int vectorCount;  // 16-byte vectors (8 channels) to move

    __device__ WorkItem(const AppendJob* jobs, int item, int kvHeads, int D) {
        job = jobs[item / kvHeads];
        head = item % kvHeads;
        rows = reinterpret_cast<__half*>(job.rows) + (size_t) head * job.rowsPerHead * D;
        // a spilled chunk is gathered whole into the tile; otherwise only the new rows move
        firstRow = spill() ? 0 : job.rowFrom;
        const int lastRow = spill() ? job.rowsPerHead : job.rowTo;
        vectorCount = (lastRow - firstRow) * (D / 8);
    }
    __device__ bool spill() const { return job.block != 0; }
};

// A thread moves VECTORS vectors per round, all loaded before any is stored so their latencies overlap:
// vectors base + k * blockDim.x, k < VECTORS. fp16 rows use [k][0]; fp32 input channels 0-3 [k][0], 4-7 [k][1].
constexpr int VECTORS = 4;
using RoundVectors = uint4[VECTORS][2];

template <int D>
__device__ __forceinline__ void load_round(const WorkItem& w, int base, const void* input, bool inputHalf,
                                           const AppendParams& p, RoundVectors& loaded) {
    constexpr int vectorsPerRow = D / 8;
#pragma unroll
    for (int k = 0; k < VECTORS; k++) {
        const int idx = base + k * blockDim.x;
        if (idx >= w.vectorCount) break;
        const int row = w.firstRow + idx / vectorsPerRow;
        const int channel = (idx % vectorsPerRow) * 8;
        if (row >= w.job.rowFrom && row < w.job.rowTo) {
            const size_t at = (size_t) (w.job.inputRow + row - w.job.rowFrom) * p.inputRowStride
                    + (size_t) w.head * D + channel;
            if (inputHalf) {
                loaded[k][0] = __ldcs(reinterpret_cast<const uint4*>(reinterpret_cast<const __half*>(input) + at));
            } else {
                const uint4* src = reinterpret_cast<const uint4*>(reinterpret_cast<const float*>(input) + at);
                loaded[k][0] = __ldcs(src);
                loaded[k][1] = __ldcs(src + 1);
            }
        } else {
            loaded[k][0] = *reinterpret_cast<const uint4*>(w.rows + (size_t) row * D + channel);
        }
    }
}

// Stores a round: new rows (checked finite) to the FP rows, and every row to the tile when the chunk spills.
template <int D>
__device__ __forceinline__ void store_round(const WorkItem& w, int base, bool inputHalf, const AppendParams& p,
                                            const RoundVectors& loaded, __half* tile) {
    constexpr int vectorsPerRow = D / 8;
#pragma unroll
    for (int k = 0; k < VECTORS; k++) {
        const int idx = base + k * blockDim.x;
        if (idx >= w.vectorCount) break;
        const int row = w.firstRow + idx / vectorsPerRow;
        const int channel = (idx % vectorsPerRow) * 8;
        uint4 eight = loaded[k][0];
        if (row >= w.job.rowFrom && row < w.job.rowTo) {
            float x[8];
            if (inputHalf) {
                if (!all_fp16_finite(eight)) {
                    const __half* h = reinterpret_cast<const __half*>(&eight);
#pragma unroll
                    for (int e = 0; e < 8; e++) {
                        const float f = __half2float(h[e]);
                        if (!fp16_finite(f)) {
                            report(p.errors, ERROR_NON_FINITE, w.job.sequence, w.head, w.job.firstToken + row,
                                   channel + e, __float_as_int(f));
                        }
                    }
                }
            } else {
                const float4 a = *reinterpret_cast<const float4*>(&loaded[k][0]);
                const float4 b = *reinterpret_cast<const float4*>(&loaded[k][1]);
                x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
                x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
                __half2* h = reinterpret_cast<__half2*>(&eight);
#pragma unroll
                for (int e = 0; e < 4; e++) h[e] = __halves2half2(__float2half_rn(x[2 * e]), __float2half_rn(x[2 * e + 1]));
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    if (!fp16_finite(x[e])) {
                        report(p.errors, ERROR_NON_FINITE, w.job.sequence, w.head, w.job.firstToken + row, channel + e,
                               __float_as_int(x[e]));
                    }
                }
            }
            *reinterpret_cast<uint4*>(w.rows + (size_t) row * D + channel) = eight;
        }
        if (w.spill()) {
            const __half2* h = reinterpret_cast<const __half2*>(&eight);
            __half2* dst = reinterpret_cast<__half2*>(tile + row * (D + 2) + channel);
#pragma unroll
            for (int e = 0; e < 4; e++) dst[e] = h[e];
        }
    }
}

}  // namespace

// One stream of one append (keys or values, head dim D, BITS-bit codes: one kernel each, so each is small).
// jobs:   the append's jobs; work items (job, kv head) = jobCount * kvHeads, item i = job i / kvHeads
// input:  new token rows [rows][kvHeads * D], fp16 if inputHalf else fp32; head h's channels at h * D
// grid:   at most as many CTAs as fit on the GPU at once; CTA c takes items c, c + gridDim.x, .. and loads the
//         first round of its next item before it quantizes the current one, so memory and arithmetic overlap
// shared: fp16 tile [G][D + 2] (+2 halves: column walks hit distinct banks), then 3 * metaCount fp32
template <bool KEYS, int D, int BITS>
__device__ void append_stream(const AppendJob* __restrict__ jobs, int jobCount, int kvHeads,
                              const void* __restrict__ input, int inputHalf, const AppendParams* __restrict__ params) {
    extern __shared__ float shared[];
    const AppendParams p = *params;
    const int items = jobCount * kvHeads;
    __half* tile = reinterpret_cast<__half*>(shared);
    RoundVectors loaded;
    if (blockIdx.x < items) load_round<D>(WorkItem(jobs, blockIdx.x, kvHeads, D), threadIdx.x, input, inputHalf, p, loaded);
    for (int item = blockIdx.x; item < items; item += gridDim.x) {
        const WorkItem w(jobs, item, kvHeads, D);
        for (int base = threadIdx.x; base < w.vectorCount; base += VECTORS * blockDim.x) {
            if (base != threadIdx.x) load_round<D>(w, base, input, inputHalf, p, loaded);  // round 0 came ahead
            store_round<D>(w, base, inputHalf, p, loaded, tile);
        }
        if (w.head == 0 && threadIdx.x == 0 && w.job.slot >= 0) {
            p.fpTable[(size_t) w.job.sequence * p.tableStride + w.job.slot] = w.job.rows;
            if (w.spill()) p.blockTable[(size_t) w.job.sequence * p.tableStride + w.job.slot] = w.job.block;
        }
        const int next = item + gridDim.x;
        if (next < items) load_round<D>(WorkItem(jobs, next, kvHeads, D), threadIdx.x, input, inputHalf, p, loaded);
        if (w.spill()) {
            __syncthreads();
            float* meta = shared + (w.job.rowsPerHead * (D + 2) + 1) / 2;
            unsigned char* out = reinterpret_cast<unsigned char*>(w.job.block) + w.head * p.headStride;
            quantize_matrix<BITS, KEYS, D>(tile, MatrixShape<KEYS, D>{w.job.rowsPerHead}, out, meta, p.errors, w.job,
                                           w.head);
        }
        __syncthreads();  // the tile and meta are the next item's
    }
}

// kvmix_append_{keys,values}_d<D>_b<BITS>; head dims as DeviceBatchKvCache.HEAD_DIMS
#define KVMIX_APPEND(STREAM, IS_KEYS, D, BITS)                                                                 \
    extern "C" __global__ void __launch_bounds__(128, 6) kvmix_append_##STREAM##_d##D##_b##BITS(             \
            const AppendJob* jobs, int jobCount, int kvHeads, const void* input, int inputHalf,               \
            const AppendParams* params) {                                                                     \
        append_stream<IS_KEYS, D, BITS>(jobs, jobCount, kvHeads, input, inputHalf, params);                    \
    }
#define KVMIX_APPEND_WIDTHS(STREAM, IS_KEYS, D) \
    KVMIX_APPEND(STREAM, IS_KEYS, D, 1) KVMIX_APPEND(STREAM, IS_KEYS, D, 2) \
    KVMIX_APPEND(STREAM, IS_KEYS, D, 3) KVMIX_APPEND(STREAM, IS_KEYS, D, 4)
KVMIX_APPEND_WIDTHS(keys, true, 64)
KVMIX_APPEND_WIDTHS(keys, true, 128)
KVMIX_APPEND_WIDTHS(values, false, 64)
KVMIX_APPEND_WIDTHS(values, false, 128)
