// Append into the device KV cache and group quantize + pack (FORMAT.md sections 1-3).
//
// One launch per stream (keys or values) per append. The host (io.kvmix.cuda.DeviceStream) turns the
// append into jobs, one per (sequence, FP row matrix touched): a job writes the new token rows into an
// fp16 FP chunk [heads][G][D] (or into a sequence's sink rows [heads][S][D]) and, when the residual
// policy spills that chunk, quantizes the whole chunk into one packed block. kvmix_append_stream_d<D>,
// grid (jobs, kvHeads): each CTA handles one head of one job.
//
// Built with -fmad=false, and every step of the quantizer spelled with an _rn intrinsic, so the codes
// and metadata are bit-identical to io.kvmix.core.quant.ScalarGroupQuantizer.
#include <cuda_fp16.h>
#include <type_traits>
#include "kvmix_format.cuh"

namespace {

using kvmix::RUN;
constexpr int APPEND_THREADS = 128;  // threads per CTA (io.kvmix.cuda.cache.DeviceBatchKvCache.THREADS)

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

// Halves between the token rows of the shared fp16 tile [G][D + 2] a spilled chunk is gathered into: +2 so
// that column walks hit distinct banks.
__host__ __device__ constexpr int tile_stride(int d) { return d + 2; }
// The padding, read by the host to size the tile (DeviceBatchKvCache.launchStream).
extern "C" __device__ int kvmix_append_tile_row_padding = tile_stride(0);

// Geometry of one packed matrix (io.kvmix.core.quant.PackedLayout) over the tile
// holding the chunk (token rows): element (lane, pack) is tile[lane * laneStride + pack * packStride].
// Keys: lane = token (G), pack = channel (D), one group of G tokens per channel.
// Values: lane = channel (D), pack = token (G), groups of min(G, D) channels per token.
template <bool KEYS, int D>
struct MatrixShape {
    static constexpr int TILE_STRIDE = tile_stride(D);
    int G;
    __device__ int laneLength() const { return KEYS ? G : D; }
    __device__ int packLength() const { return KEYS ? D : G; }
    __device__ int groupLength() const { return KEYS ? G : min(G, D); }
    __device__ static constexpr int laneStride() { return KEYS ? TILE_STRIDE : 1; }
    __device__ static constexpr int packStride() { return KEYS ? 1 : TILE_STRIDE; }
};

// The extremes of group `group` at pack index `pack` with Java's Math.min / Math.max (FORMAT.md section 1),
// walked one element at a time: the slow path for groups whose fp16 extremes are zero (below).
template <bool KEYS, int D>
__device__ void java_extremes(const __half* tile, const MatrixShape<KEYS, D> m, int group, int pack, float& lo,
                              float& hi) {
    const int firstLane = group * m.groupLength();
    const __half* column = tile + pack * m.packStride();
    lo = __int_as_float(0x7F800000);   // +inf
    hi = __int_as_float(0xFF800000);   // -inf
    for (int lane = firstLane; lane < firstLane + m.groupLength(); lane++) {
        const float x = __half2float(column[lane * m.laneStride()]);
        lo = java_min(lo, x);
        hi = java_max(hi, x);
    }
}

// FORMAT.md section 1 for every group, then section 3 packing. meta: [3][metaCount] fp32 scratch
// (scales, mins, 1 / scales with 0 for a zero scale).
template <int BITS, bool KEYS, int D>
__device__ void quantize_matrix(const __half* tile, const MatrixShape<KEYS, D> m, unsigned char* out, float* meta,
                                int* errors, const AppendJob& job, int head) {
    constexpr uint32_t maxCode = (1u << BITS) - 1u;
    constexpr float TWO_POW_23_LESS_HALF = kvmix::TWO_POW_23 - 0.5f;  // exact: 24 significant bits
    constexpr int TILE_STRIDE = MatrixShape<KEYS, D>::TILE_STRIDE;
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

    // Section 1: min, max and scale of each group; metadata index [group][pack]. The extremes are found as
    // fp16 pairs (fp16 -> fp32 is exact and monotonic, so they are the fp32 extremes' values); they may differ
    // from Java's Math.min/max only in the sign of a zero, so a group whose min or max is zero is walked again
    // with Java's rules.
    auto finish = [&](int item, float lo, float hi) {
        const int pack = item % packLength;
        const int group = item / packLength;
        if (lo == 0.0f || hi == 0.0f) java_extremes<KEYS, D>(tile, m, group, pack, lo, hi);
        const float scale = __fdiv_rn(__fsub_rn(hi, lo), (float) maxCode);
        const __half scale16 = __float2half_rn(scale);
        const float scaleValue = __half2float(scale16);
        if (isinf(scaleValue)) {
            report(errors, ERROR_SCALE_OVERFLOW, job.sequence, head, job.firstToken, group * groupLength, pack);
        }
        scalesOut[item] = scale16;
        minsOut[item] = __float2half_rn(lo);
        scales[item] = scaleValue;
        mins[item] = lo;
        inverseScales[item] = scaleValue == 0.0f ? 0.0f : 1.0f / scaleValue;
    };
    const __half2 positiveInf2 = __half2half2(__ushort_as_half(0x7C00));
    const __half2 negativeInf2 = __half2half2(__ushort_as_half(0xFC00));
    if constexpr (KEYS) {
        // One group per channel (its G tokens). THREADS_PER_PAIR threads take the channel pair 2c, 2c + 1 and
        // every THREADS_PER_PAIR-th token each, then meet through shuffles (neighbouring lanes).
        constexpr int THREADS_PER_PAIR = APPEND_THREADS / (D / 2);
        static_assert(THREADS_PER_PAIR >= 2, "a thread per channel of each pair finishes it");
        const int pair = threadIdx.x / THREADS_PER_PAIR;
        const int sub = threadIdx.x % THREADS_PER_PAIR;
        __half2 lo2 = positiveInf2, hi2 = negativeInf2;
        for (int token = sub; token < laneLength; token += THREADS_PER_PAIR) {
            const __half2 x = *reinterpret_cast<const __half2*>(tile + token * TILE_STRIDE + 2 * pair);
            lo2 = __hmin2(lo2, x);
            hi2 = __hmax2(hi2, x);
        }
#pragma unroll
        for (int offset = 1; offset < THREADS_PER_PAIR; offset *= 2) {
            lo2 = __hmin2(lo2, __shfl_xor_sync(0xffffffffu, lo2, offset));
            hi2 = __hmax2(hi2, __shfl_xor_sync(0xffffffffu, hi2, offset));
        }
        if (sub < 2) {  // thread sub finishes channel 2 * pair + sub
            finish(2 * pair + sub, __half2float(sub == 0 ? __low2half(lo2) : __high2half(lo2)),
                   __half2float(sub == 0 ? __low2half(hi2) : __high2half(hi2)));
        }
    } else {
        // Groups of groupLength consecutive channels of one token row, walked in channel pairs.
        for (int item = threadIdx.x; item < metaCount; item += APPEND_THREADS) {
            const int pack = item % packLength;
            const __half2* row = reinterpret_cast<const __half2*>(tile + pack * TILE_STRIDE + item / packLength * groupLength);
            __half2 lo2 = positiveInf2, hi2 = negativeInf2;
            for (int k = 0; k < groupLength / 2; k++) {
                lo2 = __hmin2(lo2, row[k]);
                hi2 = __hmax2(hi2, row[k]);
            }
            finish(item, fminf(__low2float(lo2), __high2float(lo2)), fmaxf(__low2float(hi2), __high2float(hi2)));
        }
    }
    __syncthreads();

    // Section 3: each thread packs one run of 32 codes of one lane into BITS words. The pack length (D or G)
    // is a multiple of 32 for the GPU cache's shapes, so every run is full; metadata comes 4 entries at a time.
    // code = floor(y), y = fl(fl(d / scale) + 0.5), d = x - min, as FORMAT.md says. d * (1/scale) + 0.5 with
    // one rounding (an fma) is within a few ulps (< 1e-5 for y < 17) of y, so it gives the same floor unless y
    // lands within 1e-4 of an integer: those codes are marked and redone with the IEEE division after the run
    // (rare). floor(y) without conversion instructions: y >= 0.5 (d >= 0), and for y < 2^23 the sum y + 2^23
    // rounded toward zero is 2^23 + floor(y) exactly, floor(y) in its low mantissa bits; a larger y gives more
    // than maxCode either way. The mark: y - (floor(y) + 0.5), exact, beyond +-0.4999. A zero scale has 1/scale
    // stored as 0: y = 0.5, code 0.
    for (int item = threadIdx.x; item < runs * laneLength; item += APPEND_THREADS) {
        const int run = item / laneLength;
        const int lane = item % laneLength;
        const int group = lane / groupLength;
        const __half* row = tile + lane * m.laneStride() + run * RUN * m.packStride();
        const int meta0 = group * packLength + run * RUN;
        auto element = [&](int i) { return __half2float(row[i * m.packStride()]); };
        auto code_of = [](float floorBits) {
            return min(maxCode, static_cast<uint32_t>(__float_as_int(floorBits) - __float_as_int(kvmix::TWO_POW_23)));
        };
        uint32_t words[BITS] = {};
        uint32_t redo = 0;  // bit i: code i is redone with the division
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
                for (int e = 0; e < 4; e++) x[e] = element(i + e);
            }
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float d = __fsub_rn(x[e], mn[e]);
                const float y = __fmaf_rn(d, inverse[e], 0.5f);
                const float floorBits = __fadd_rz(y, kvmix::TWO_POW_23);
                const float offCentre = __fsub_rn(y, __fsub_rn(floorBits, TWO_POW_23_LESS_HALF));
                if (fabsf(offCentre) > 0.4999f) redo |= 1u << (i + e);
                kvmix::run_put<BITS>(words, i + e, code_of(floorBits));
            }
        }
        while (redo != 0) {
            const int i = __ffs(redo) - 1;
            redo &= redo - 1;
            const float scale = scales[meta0 + i];
            if (scale != 0.0f) {
                const float d = __fsub_rn(element(i), mins[meta0 + i]);
                kvmix::run_replace<BITS>(words, i, code_of(__fadd_rz(__fadd_rn(__fdiv_rn(d, scale), 0.5f), kvmix::TWO_POW_23)));
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

// Reports the first value of one input vector (8 channels of row `row`: fp16 in lo, or fp32 in lo and hi)
// that is not a finite fp16 (the copy loop only tests the whole vector).
template <bool INPUT_HALF>
__device__ __forceinline__ void report_non_finite(int* errors, const AppendJob& job, int head, int row, int channel,
                                                  uint4 lo, uint4 hi) {
    const __half* halves = reinterpret_cast<const __half*>(&lo);
    const float* lowFloats = reinterpret_cast<const float*>(&lo);
    const float* highFloats = reinterpret_cast<const float*>(&hi);
#pragma unroll
    for (int e = 0; e < 8; e++) {
        const float x = INPUT_HALF ? __half2float(halves[e]) : e < 4 ? lowFloats[e] : highFloats[e - 4];
        if (!fp16_finite(x)) {
            report(errors, ERROR_NON_FINITE, job.sequence, head, job.firstToken + row, channel + e, __float_as_int(x));
        }
    }
}

// New rows go to the FP row matrix; a spilled chunk is also gathered whole into the tile [G][D + 2].
// 8 channels (16 bytes of fp16) per vector: a thread keeps one column of vectors (APPEND_THREADS is a
// multiple of a row's vectors) and walks rows ROWS_PER_PASS apart, loading VECTORS_IN_FLIGHT vectors before
// it stores any so that their memory latencies overlap; its addresses move by fixed strides.
template <int D, bool INPUT_HALF>
__device__ __forceinline__ void copy_rows(const AppendJob& job, int head, const void* __restrict__ input,
                                          const AppendParams& p, __half* __restrict__ rows, __half* tile) {
    using Input = std::conditional_t<INPUT_HALF, __half, float>;
    constexpr int INPUT_VECTORS = INPUT_HALF ? 1 : 2;  // uint4 per 8 input channels
    constexpr int TILE_STRIDE = tile_stride(D);
    constexpr int VECTORS_IN_FLIGHT = 4;
    constexpr int VECTORS_PER_ROW = D / 8;
    static_assert(APPEND_THREADS % VECTORS_PER_ROW == 0, "a thread keeps its channels");
    constexpr int ROWS_PER_PASS = APPEND_THREADS / VECTORS_PER_ROW;
    const bool spill = job.block != 0;
    const int channel = (threadIdx.x % VECTORS_PER_ROW) * 8;
    const int lastRow = spill ? job.rowsPerHead : job.rowTo;
    int row0 = (spill ? 0 : job.rowFrom) + threadIdx.x / VECTORS_PER_ROW;
    // This thread's vectors of row row0: in the row matrix, the tile and (input row inputRow + row - rowFrom,
    // for rowFrom <= row < rowTo) the input; each moves by a fixed step per row.
    uint4* rowsAt = reinterpret_cast<uint4*>(rows + row0 * D + channel);
    __half* tileAt = tile + row0 * TILE_STRIDE + channel;
    const long long inputRowVectors = (long long) p.inputRowStride * (long long) sizeof(Input) / 16;
    const uint4* inputAt = reinterpret_cast<const uint4*>(static_cast<const Input*>(input) + (long long) head * D + channel)
                           + (long long) (job.inputRow - job.rowFrom + row0) * inputRowVectors;
    const long long inputStep = ROWS_PER_PASS * inputRowVectors;
    constexpr int ROWS_STEP = ROWS_PER_PASS * D / 8;  // uint4
    for (; row0 < lastRow; row0 += VECTORS_IN_FLIGHT * ROWS_PER_PASS) {
        uint4 loaded[VECTORS_IN_FLIGHT][INPUT_VECTORS];  // fp32 input: channels 0-3 in [k][0], 4-7 in [k][1]
#pragma unroll
        for (int k = 0; k < VECTORS_IN_FLIGHT; k++) {
            const int row = row0 + k * ROWS_PER_PASS;
            if (row >= lastRow) break;
            if (row >= job.rowFrom && row < job.rowTo) {
#pragma unroll
                for (int v = 0; v < INPUT_VECTORS; v++) loaded[k][v] = inputAt[k * inputStep + v];
            } else {
                loaded[k][0] = rowsAt[k * ROWS_STEP];
            }
        }
#pragma unroll
        for (int k = 0; k < VECTORS_IN_FLIGHT; k++) {
            const int row = row0 + k * ROWS_PER_PASS;
            if (row >= lastRow) break;
            const bool isNew = row >= job.rowFrom && row < job.rowTo;
            uint4 eight = loaded[k][0];
            __half2* eightPairs = reinterpret_cast<__half2*>(&eight);
            if (isNew) {
                // every new value must be a finite fp16: |x| <= 65504 (NaN compares false)
                bool finite = true;
                if constexpr (INPUT_HALF) {
                    const __half2 largest = __half2half2(__ushort_as_half(0x7BFF));
#pragma unroll
                    for (int e = 0; e < 4; e++) finite &= __hble2(__habs2(eightPairs[e]), largest);
                } else {
                    const float4 a = *reinterpret_cast<const float4*>(&loaded[k][0]);
                    const float4 b = *reinterpret_cast<const float4*>(&loaded[k][INPUT_VECTORS - 1]);
                    const float x[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        eightPairs[e] = __halves2half2(__float2half_rn(x[2 * e]), __float2half_rn(x[2 * e + 1]));
                        finite &= fp16_finite(x[2 * e]) && fp16_finite(x[2 * e + 1]);
                    }
                }
                if (!finite) {
                    report_non_finite<INPUT_HALF>(p.errors, job, head, row, channel, loaded[k][0], loaded[k][INPUT_VECTORS - 1]);
                }
                rowsAt[k * ROWS_STEP] = eight;
            }
            if (spill) {
                __half2* dst = reinterpret_cast<__half2*>(tileAt + k * ROWS_PER_PASS * TILE_STRIDE);
#pragma unroll
                for (int e = 0; e < 4; e++) dst[e] = eightPairs[e];
            }
        }
        rowsAt += VECTORS_IN_FLIGHT * ROWS_STEP;
        tileAt += VECTORS_IN_FLIGHT * ROWS_PER_PASS * TILE_STRIDE;
        inputAt += VECTORS_IN_FLIGHT * inputStep;
    }
}

// One CTA's work: one head of one job (see kvmix_append_stream_d<D> below), head dim D.
template <int D>
__device__ void append_head(const AppendJob& job, int head, const void* __restrict__ input, int inputHalf,
                            const AppendParams& p, float* shared) {
    constexpr int TILE_STRIDE = tile_stride(D);
    __half* __restrict__ rows = reinterpret_cast<__half*>(job.rows) + (size_t) head * job.rowsPerHead * D;
    const bool spill = job.block != 0;
    __half* tile = reinterpret_cast<__half*>(shared);
    if (inputHalf) copy_rows<D, true>(job, head, input, p, rows, tile);
    else copy_rows<D, false>(job, head, input, p, rows, tile);
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

    float* meta = shared + (job.rowsPerHead * TILE_STRIDE + 1) / 2;
    unsigned char* out = reinterpret_cast<unsigned char*>(job.block) + head * p.headStride;
    if (p.keys) quantize_chunk<true, D>(tile, job.rowsPerHead, p.bits, out, meta, p.errors, job, head);
    else quantize_chunk<false, D>(tile, job.rowsPerHead, p.bits, out, meta, p.errors, job, head);
}

}  // namespace

// kvmix_append_stream_d<D>, one kernel per head dim of the GPU cache (io.kvmix.cuda.cache.DeviceBatchKvCache.HEAD_DIMS)
// jobs:   the append's jobs, one CTA of APPEND_THREADS per (job, kv head); grid (jobs, kvHeads)
// input:  new token rows [rows][kvHeads * D], fp16 if inputHalf else fp32; head h's channels at h * D
// dynamic shared: fp16 tile [G][D + 2], then scales, mins and 1 / scales as fp32 [metaCount] each
#define KVMIX_APPEND(D)                                                                                       \
    extern "C" __global__ void __launch_bounds__(APPEND_THREADS, 8) /* 8 CTAs per SM: 64 registers */        \
    kvmix_append_stream_d##D(const AppendJob* __restrict__ jobs, const void* __restrict__ input, int inputHalf, \
                             const AppendParams* __restrict__ params) {                                      \
        extern __shared__ float shared[];                                                                    \
        const AppendJob job = jobs[blockIdx.x];     /* copies in registers: read once, not per use */        \
        const AppendParams p = *params;                                                                      \
        append_head<D>(job, blockIdx.y, input, inputHalf, p, shared);                                        \
    }
KVMIX_APPEND(64)
KVMIX_APPEND(128)
