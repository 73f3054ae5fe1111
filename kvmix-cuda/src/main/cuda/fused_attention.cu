// Fused decode attention over the device KV cache, flash-decoding style.
//
// Each sequence of the batch has one query token (its newest position). kvmix_attend_d<D>_g<GQ>
// splits every sequence's history into runs of splitUnits * 32 tokens; grid (splits, kvHeads, batch),
// one CTA of 4 warps per (split, KV head, sequence) serving the GQ query heads that share that KV head.
// A CTA scores its tokens (packed keys decoded where they are read, FP keys from fp16 rows), takes a
// local softmax and sums the values (packed or FP) weighted by it, and writes the unnormalised partial
// output with its max and sum. kvmix_attend_combine merges the splits of each (sequence, query head).
//
// Tokens of one sequence and stream (FORMAT.md section 4), S sinks, G group size:
//   [0, S)                 sink rows          sinks[batch][kvHeads][S][D] fp16
//   [S, packedEnd)         packed blocks      block j (tokens S + j*G ..): blockTable[seq][j] + head * headStride
//   [packedEnd, length)    FP rows            chunk j: fpTable[seq][j], rows [kvHeads][G][D] fp16
// packedEnd is per stream (keys and values may differ) and never above the last append's first token:
// that step's own tokens are read in full precision, as on the CPU.
// The work unit is 32 consecutive tokens (one warp lane per token for keys): a run of a packed matrix.
#include <cuda_fp16.h>
#include "kvmix_format.cuh"

namespace {

using kvmix::RUN;
constexpr int WARPS = 4;
constexpr int THREADS = WARPS * 32;
constexpr int MAX_VALUE_GROUPS = 4;  // D / min(G, D) for D <= 128 and G >= 32
constexpr int GROUP_PITCH = 33;      // per-group stride of the value-pass scratch: lanes of different groups use distinct banks
#define NEG_INF (-__int_as_float(0x7F800000))  // -inf; a macro: __int_as_float is not constexpr

template <int D, int GQ>
struct Layout {
    static constexpr int CPL = D / 32;  // channels per lane in the value pass
    // per-warp scratch: keys q*scale [GQ][D]; values p*scale [GQ][MAX_VALUE_GROUPS][GROUP_PITCH]; final [GQ][D]
    static constexpr int KEY_SCRATCH = GQ * D;
    static constexpr int VALUE_SCRATCH = GQ * MAX_VALUE_GROUPS * GROUP_PITCH;
    static constexpr int SCRATCH = KEY_SCRATCH > VALUE_SCRATCH ? KEY_SCRATCH : VALUE_SCRATCH;
    // static shared floats: q [GQ][D], scratch [WARPS][SCRATCH], reduction [WARPS][GQ], max/sum [2][GQ]
    static constexpr int FIXED = GQ * D + WARPS * SCRATCH + WARPS * GQ + 2 * GQ;
};

struct StreamArgs {
    const unsigned long long* blocks;  // [batch][tableStride]
    const unsigned long long* chunks;  // [batch][tableStride]
    const __half* sinks;               // [batch][kvHeads][S][D]
    long long headStride;
    int bits;
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Dot products of the GQ queries with the key of this lane's token, from a packed key matrix:
// lane axis = G tokens, pack axis = D channels, one (scale, min) per channel.
// dot = sum_c q_c * (code_c * scale_c + min_c) = sum_c (q_c * scale_c) * code_c + sum_c q_c * min_c.
template <int BITS, int D, int GQ>
__device__ __forceinline__ void packed_key_dots(const unsigned char* matrix, int groupSize, int laneInBlock,
                                                const float* q, float* qScaled, float (&dot)[GQ]) {
    constexpr int RUNS = D / RUN;
    const int lane = threadIdx.x % 32;
    const uint32_t* words = reinterpret_cast<const uint32_t*>(matrix);
    uint32_t w[RUNS][BITS];
#pragma unroll
    for (int r = 0; r < RUNS; r++)
#pragma unroll
        for (int k = 0; k < BITS; k++) w[r][k] = __ldg(words + (r * BITS + k) * groupSize + laneInBlock);
    const __half* scales = reinterpret_cast<const __half*>(matrix + 4 * RUNS * BITS * groupSize);
    const __half* mins = scales + D;
    float bias[GQ];
#pragma unroll
    for (int g = 0; g < GQ; g++) bias[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < RUNS; i++) {
        const int c = lane + 32 * i;
        const float scale = __half2float(scales[c]);
        const float mn = __half2float(mins[c]);
#pragma unroll
        for (int g = 0; g < GQ; g++) {
            qScaled[g * D + c] = q[g * D + c] * scale;
            bias[g] += q[g * D + c] * mn;
        }
    }
#pragma unroll
    for (int g = 0; g < GQ; g++) dot[g] = warp_sum(bias[g]);
    __syncwarp();
#pragma unroll
    for (int r = 0; r < RUNS; r++) {
#pragma unroll
        for (int i = 0; i < RUN; i += 4) {
            const float c0 = kvmix::code_to_float(kvmix::run_code<BITS>(w[r], i));
            const float c1 = kvmix::code_to_float(kvmix::run_code<BITS>(w[r], i + 1));
            const float c2 = kvmix::code_to_float(kvmix::run_code<BITS>(w[r], i + 2));
            const float c3 = kvmix::code_to_float(kvmix::run_code<BITS>(w[r], i + 3));
#pragma unroll
            for (int g = 0; g < GQ; g++) {
                const float4 qs = *reinterpret_cast<const float4*>(qScaled + g * D + r * RUN + i);
                dot[g] += qs.x * c0 + qs.y * c1 + qs.z * c2 + qs.w * c3;
            }
        }
    }
    __syncwarp();
}

// Dot products of the GQ queries with one fp16 row of D channels.
template <int D, int GQ>
__device__ __forceinline__ void fp_key_dots(const __half* row, const float* q, float (&dot)[GQ]) {
#pragma unroll
    for (int g = 0; g < GQ; g++) dot[g] = 0.0f;
#pragma unroll 4
    for (int c = 0; c < D; c += 8) {
        const uint4 raw = *reinterpret_cast<const uint4*>(row + c);
        const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float2 x = __half22float2(h[e]);
#pragma unroll
            for (int g = 0; g < GQ; g++) dot[g] += q[g * D + c + 2 * e] * x.x + q[g * D + c + 2 * e + 1] * x.y;
        }
    }
}

// Adds p_t * value_t for the packed tokens of one run of a value matrix (lane axis = D channels,
// pack axis = G tokens, groups of groupLength channels per token): this lane's CPL channels.
// acc_c += sum_t (p_t * scale_tg) * code_tc; the sum_t p_t * min_tg part goes to minSum (lane = token).
template <int BITS, int D, int GQ>
__device__ __forceinline__ void packed_value_sums(const unsigned char* matrix, int groupSize, int groupLength,
                                                  int run, const float (&p)[GQ], bool tokenLive,
                                                  float* pScaled, float (&acc)[GQ][D / 32],
                                                  float (&minSum)[GQ][MAX_VALUE_GROUPS]) {
    constexpr int CPL = D / 32;
    const int lane = threadIdx.x % 32;
    const int groups = D / groupLength;
    const uint32_t* words = reinterpret_cast<const uint32_t*>(matrix);
    uint32_t w[CPL][BITS];
#pragma unroll
    for (int k = 0; k < BITS; k++) {
        const uint32_t* at = words + (run * BITS + k) * D + lane * CPL;
        if constexpr (CPL == 4) {
            const uint4 v = __ldg(reinterpret_cast<const uint4*>(at));
            w[0][k] = v.x; w[1][k] = v.y; w[2][k] = v.z; w[3][k] = v.w;
        } else if constexpr (CPL == 2) {
            const uint2 v = __ldg(reinterpret_cast<const uint2*>(at));
            w[0][k] = v.x; w[1][k] = v.y;
        } else {
#pragma unroll
            for (int cc = 0; cc < CPL; cc++) w[cc][k] = __ldg(at + cc);
        }
    }
    const int metaCount = groupSize * groups;
    const __half* scales = reinterpret_cast<const __half*>(matrix + 4 * (groupSize / RUN) * BITS * D);
    const __half* mins = scales + metaCount;
    const int token = run * RUN + lane;  // this lane's token within the block
#pragma unroll
    for (int grp = 0; grp < MAX_VALUE_GROUPS; grp++) {
        if (grp < groups) {
            const float scale = tokenLive ? __half2float(scales[grp * groupSize + token]) : 0.0f;
            const float mn = tokenLive ? __half2float(mins[grp * groupSize + token]) : 0.0f;
#pragma unroll
            for (int g = 0; g < GQ; g++) {
                pScaled[(g * MAX_VALUE_GROUPS + grp) * GROUP_PITCH + lane] = tokenLive ? p[g] * scale : 0.0f;
                minSum[g][grp] += tokenLive ? p[g] * mn : 0.0f;
            }
        }
    }
    __syncwarp();
    const int myGroup = lane * CPL / groupLength;
#pragma unroll
    for (int i = 0; i < RUN; i++) {
        float codes[CPL];
#pragma unroll
        for (int cc = 0; cc < CPL; cc++) codes[cc] = kvmix::code_to_float(kvmix::run_code<BITS>(w[cc], i));
#pragma unroll
        for (int g = 0; g < GQ; g++) {
            const float ps = pScaled[(g * MAX_VALUE_GROUPS + myGroup) * GROUP_PITCH + i];
#pragma unroll
            for (int cc = 0; cc < CPL; cc++) acc[g][cc] += ps * codes[cc];
        }
    }
    __syncwarp();
}

// Adds p_t * row_t for one fp16 row (this lane's CPL channels).
template <int D, int GQ>
__device__ __forceinline__ void fp_value_sums(const __half* row, const float* p, int pStride,
                                              float (&acc)[GQ][D / 32]) {
    constexpr int CPL = D / 32;
    const int lane = threadIdx.x % 32;
    float x[CPL];
    if constexpr (CPL == 4) {
        const uint2 raw = *reinterpret_cast<const uint2*>(row + lane * CPL);
        const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
        const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
        x[0] = a.x; x[1] = a.y; x[2] = b.x; x[3] = b.y;
    } else if constexpr (CPL == 2) {
        const float2 a = __half22float2(*reinterpret_cast<const __half2*>(row + lane * CPL));
        x[0] = a.x; x[1] = a.y;
    } else {
#pragma unroll
        for (int cc = 0; cc < CPL; cc++) x[cc] = __half2float(row[lane * CPL + cc]);
    }
#pragma unroll
    for (int g = 0; g < GQ; g++) {
        const float pg = p[g * pStride];
#pragma unroll
        for (int cc = 0; cc < CPL; cc++) acc[g][cc] += pg * x[cc];
    }
}

template <int D, int GQ>
__device__ void attend_split(const void* query, int queryHalf, float softmaxScale, const int* sequenceState,
                             StreamArgs keys, StreamArgs values, int kvHeads, int groupSize, int sinks,
                             int window, int tableStride, int splitUnits, float* partialAcc, float* partialStats) {
    using L = Layout<D, GQ>;
    constexpr int CPL = L::CPL;
    __shared__ __align__(16) float shared[L::FIXED];
    extern __shared__ float scores[];  // [GQ][unitCount * 32]: the launch's dynamic shared memory
    const int split = blockIdx.x;
    const int head = blockIdx.y;
    const int seq = blockIdx.z;
    const int splits = gridDim.x;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int queryHeads = kvHeads * GQ;

    float* q = shared;                                    // [GQ][D]
    float* scratch = q + GQ * D + warp * L::SCRATCH;      // this warp's
    float* reduction = q + GQ * D + WARPS * L::SCRATCH;   // [WARPS][GQ]
    float* rowMax = reduction + WARPS * GQ;               // [GQ]
    float* rowSum = rowMax + GQ;                          // [GQ]

    const int length = sequenceState[seq * 3];
    const int keyPackedEnd = sequenceState[seq * 3 + 1];
    const int valuePackedEnd = sequenceState[seq * 3 + 2];
    const int last = length - 1;
    const int first = window > 0 ? max(0, last - window + 1) : 0;
    const int sinkUnits = split == 0 ? (sinks + RUN - 1) / RUN : 0;
    const int unitCount = sinkUnits + splitUnits;
    const int scoreStride = unitCount * RUN;
    const int firstUnit = split * splitUnits;  // regular units: tokens sinks + 32 * u ..

    // Sequence position of the first token of unit u of this CTA.
    auto unitStart = [&](int u) { return u < sinkUnits ? u * RUN : sinks + (firstUnit + u - sinkUnits) * RUN; };

    for (int i = threadIdx.x; i < GQ * D; i += THREADS) {
        const size_t at = ((size_t) seq * queryHeads + head * GQ) * D + i;
        q[i] = queryHalf ? __half2float(reinterpret_cast<const __half*>(query)[at])
                         : reinterpret_cast<const float*>(query)[at];
    }
    __syncthreads();

    // Pass 1: scores (scaled dot products), -inf where the token is not visible.
    for (int u = warp; u < unitCount; u += WARPS) {
        const int start = unitStart(u);
        const int t = start + lane;
        const bool isSink = u < sinkUnits;
        const bool visible = t >= first && t <= last && (!isSink || t < sinks);
        float dot[GQ];
#pragma unroll
        for (int g = 0; g < GQ; g++) dot[g] = 0.0f;
        if (start <= last && start + RUN > first) {
            if (isSink) {
                if (visible) fp_key_dots<D, GQ>(keys.sinks + (((size_t) seq * kvHeads + head) * sinks + t) * D, q, dot);
            } else {
                const int j = (start - sinks) / groupSize;
                const int inBlock = start - sinks - j * groupSize + lane;
                if (start < keyPackedEnd) {
                    const unsigned char* matrix = reinterpret_cast<const unsigned char*>(
                            keys.blocks[(size_t) seq * tableStride + j]) + head * keys.headStride;
                    switch (keys.bits) {
                        case 1: packed_key_dots<1, D, GQ>(matrix, groupSize, inBlock, q, scratch, dot); break;
                        case 2: packed_key_dots<2, D, GQ>(matrix, groupSize, inBlock, q, scratch, dot); break;
                        case 3: packed_key_dots<3, D, GQ>(matrix, groupSize, inBlock, q, scratch, dot); break;
                        default: packed_key_dots<4, D, GQ>(matrix, groupSize, inBlock, q, scratch, dot); break;
                    }
                }
                if (t >= keyPackedEnd && visible) {
                    const __half* chunk = reinterpret_cast<const __half*>(keys.chunks[(size_t) seq * tableStride + j]);
                    fp_key_dots<D, GQ>(chunk + ((size_t) head * groupSize + inBlock) * D, q, dot);
                }
            }
        }
#pragma unroll
        for (int g = 0; g < GQ; g++) scores[g * scoreStride + u * RUN + lane] = visible ? dot[g] * softmaxScale : NEG_INF;
    }
    __syncthreads();

    // Local softmax: max and sum per query head over this CTA's tokens; scores become exp(s - max).
    float localMax[GQ];
#pragma unroll
    for (int g = 0; g < GQ; g++) {
        float m = NEG_INF;
        for (int i = threadIdx.x; i < scoreStride; i += THREADS) m = fmaxf(m, scores[g * scoreStride + i]);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        localMax[g] = m;
    }
    if (lane == 0) {
#pragma unroll
        for (int g = 0; g < GQ; g++) reduction[warp * GQ + g] = localMax[g];
    }
    __syncthreads();
    if (threadIdx.x < GQ) {
        float m = NEG_INF;
        for (int w = 0; w < WARPS; w++) m = fmaxf(m, reduction[w * GQ + threadIdx.x]);
        rowMax[threadIdx.x] = m;
    }
    __syncthreads();
    float localSum[GQ];
#pragma unroll
    for (int g = 0; g < GQ; g++) {
        const float m = rowMax[g];
        float s = 0.0f;
        for (int i = threadIdx.x; i < scoreStride; i += THREADS) {
            const float e = m == NEG_INF ? 0.0f : expf(scores[g * scoreStride + i] - m);
            scores[g * scoreStride + i] = e;
            s += e;
        }
        localSum[g] = warp_sum(s);
    }
    __syncthreads();  // the reduction slots are reused below
    if (lane == 0) {
#pragma unroll
        for (int g = 0; g < GQ; g++) reduction[warp * GQ + g] = localSum[g];
    }
    __syncthreads();
    if (threadIdx.x < GQ) {
        float s = 0.0f;
        for (int w = 0; w < WARPS; w++) s += reduction[w * GQ + threadIdx.x];
        rowSum[threadIdx.x] = s;
    }

    // Pass 2: weighted sum of the values.
    float acc[GQ][CPL];
    float minSum[GQ][MAX_VALUE_GROUPS];
#pragma unroll
    for (int g = 0; g < GQ; g++) {
#pragma unroll
        for (int cc = 0; cc < CPL; cc++) acc[g][cc] = 0.0f;
#pragma unroll
        for (int grp = 0; grp < MAX_VALUE_GROUPS; grp++) minSum[g][grp] = 0.0f;
    }
    const int valueGroupLength = min(groupSize, D);
    for (int u = warp; u < unitCount; u += WARPS) {
        const int start = unitStart(u);
        if (start > last || start + RUN <= first) continue;
        const float* p = scores + u * RUN;  // p[g * scoreStride + i] for token start + i
        if (u < sinkUnits) {
            const int end = min(min(start + RUN, sinks), last + 1);
            for (int t = max(start, first); t < end; t++) {
                fp_value_sums<D, GQ>(values.sinks + (((size_t) seq * kvHeads + head) * sinks + t) * D,
                                     p + (t - start), scoreStride, acc);
            }
            continue;
        }
        const int j = (start - sinks) / groupSize;
        const int inBlock = start - sinks - j * groupSize;
        if (start < valuePackedEnd) {
            const int t = start + lane;
            const bool live = t < valuePackedEnd && t >= first && t <= last;
            float pt[GQ];
#pragma unroll
            for (int g = 0; g < GQ; g++) pt[g] = p[g * scoreStride + lane];
            const unsigned char* matrix = reinterpret_cast<const unsigned char*>(
                    values.blocks[(size_t) seq * tableStride + j]) + head * values.headStride;
            const int run = inBlock / RUN;
            switch (values.bits) {
                case 1: packed_value_sums<1, D, GQ>(matrix, groupSize, valueGroupLength, run, pt, live, scratch, acc, minSum); break;
                case 2: packed_value_sums<2, D, GQ>(matrix, groupSize, valueGroupLength, run, pt, live, scratch, acc, minSum); break;
                case 3: packed_value_sums<3, D, GQ>(matrix, groupSize, valueGroupLength, run, pt, live, scratch, acc, minSum); break;
                default: packed_value_sums<4, D, GQ>(matrix, groupSize, valueGroupLength, run, pt, live, scratch, acc, minSum); break;
            }
        }
        const int fpFrom = max(max(start, valuePackedEnd), first);
        const int fpTo = min(start + RUN, last + 1);
        if (fpFrom < fpTo) {
            const __half* chunk = reinterpret_cast<const __half*>(values.chunks[(size_t) seq * tableStride + j]);
            for (int t = fpFrom; t < fpTo; t++) {
                fp_value_sums<D, GQ>(chunk + ((size_t) head * groupSize + inBlock + (t - start)) * D,
                                     p + (t - start), scoreStride, acc);
            }
        }
    }
    // The min terms were summed per token (lane); every channel of a group gets its group's total.
    const int myGroup = lane * CPL / valueGroupLength;
#pragma unroll
    for (int g = 0; g < GQ; g++) {
#pragma unroll
        for (int grp = 0; grp < MAX_VALUE_GROUPS; grp++) {
            const float total = warp_sum(minSum[g][grp]);
            if (grp == myGroup) {
#pragma unroll
                for (int cc = 0; cc < CPL; cc++) acc[g][cc] += total;
            }
        }
    }

    // Sum the warps' accumulators; write the partial output [seq][queryHead][split][D] and (max, sum).
    __syncthreads();  // scratch is reused
#pragma unroll
    for (int g = 0; g < GQ; g++)
#pragma unroll
        for (int cc = 0; cc < CPL; cc++) scratch[g * D + lane * CPL + cc] = acc[g][cc];
    __syncthreads();
    const float* warpAcc = q + GQ * D;
    for (int i = threadIdx.x; i < GQ * D; i += THREADS) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; w++) s += warpAcc[w * L::SCRATCH + i];
        const int g = i / D;
        const size_t row = (size_t) seq * queryHeads + head * GQ + g;
        partialAcc[(row * splits + split) * D + i % D] = s;
    }
    if (threadIdx.x < GQ) {
        const size_t row = (size_t) seq * queryHeads + head * GQ + threadIdx.x;
        partialStats[(row * splits + split) * 2] = rowMax[threadIdx.x];
        partialStats[(row * splits + split) * 2 + 1] = rowSum[threadIdx.x];
    }
}

}  // namespace

// query:          [batch][kvHeads * GQ][D], fp16 if queryHalf else fp32
// sequenceState:  [batch][3] = length, keys' packedEnd, values' packedEnd
// partialAcc:     [batch][queryHeads][splits][D] fp32;  partialStats: [batch][queryHeads][splits][2] (max, sum)
#define KVMIX_ATTEND(D, GQ)                                                                                    \
    extern "C" __global__ void __launch_bounds__(THREADS) kvmix_attend_d##D##_g##GQ(                           \
            const void* query, int queryHalf, float softmaxScale, const int* sequenceState,                   \
            const unsigned long long* keyBlocks, const unsigned long long* keyChunks, const __half* keySinks,  \
            long long keyHeadStride, int keyBits,                                                              \
            const unsigned long long* valueBlocks, const unsigned long long* valueChunks,                      \
            const __half* valueSinks, long long valueHeadStride, int valueBits,                                \
            int kvHeads, int groupSize, int sinks, int window, int tableStride, int splitUnits,                \
            float* partialAcc, float* partialStats) {                                                          \
        attend_split<D, GQ>(query, queryHalf, softmaxScale, sequenceState,                                    \
                            StreamArgs{keyBlocks, keyChunks, keySinks, keyHeadStride, keyBits},                \
                            StreamArgs{valueBlocks, valueChunks, valueSinks, valueHeadStride, valueBits},      \
                            kvHeads, groupSize, sinks, window, tableStride, splitUnits, partialAcc,            \
                            partialStats);                                                                     \
    }

KVMIX_ATTEND(64, 1)
KVMIX_ATTEND(64, 2)
KVMIX_ATTEND(64, 4)
KVMIX_ATTEND(64, 8)
KVMIX_ATTEND(128, 1)
KVMIX_ATTEND(128, 2)
KVMIX_ATTEND(128, 4)
KVMIX_ATTEND(128, 8)

// Merges the splits of each (sequence, query head): grid (batch * queryHeads), headDim threads.
// out: [batch][queryHeads][D], fp16 if outHalf else fp32.
extern "C" __global__ void kvmix_attend_combine(const float* partialAcc, const float* partialStats, int splits,
                                                int headDim, void* out, int outHalf) {
    const size_t row = blockIdx.x;
    const int c = threadIdx.x;
    const float* stats = partialStats + row * splits * 2;
    float m = NEG_INF;
    for (int s = 0; s < splits; s++) m = fmaxf(m, stats[2 * s]);
    float sum = 0.0f;
    float acc = 0.0f;
    for (int s = 0; s < splits; s++) {
        const float ms = stats[2 * s];
        if (ms == NEG_INF) continue;
        const float w = expf(ms - m);
        sum += stats[2 * s + 1] * w;
        acc += partialAcc[(row * splits + s) * headDim + c] * w;
    }
    const float value = acc / sum;
    if (outHalf) {
        reinterpret_cast<__half*>(out)[row * headDim + c] = __float2half_rn(value);
    } else {
        reinterpret_cast<float*>(out)[row * headDim + c] = value;
    }
}
