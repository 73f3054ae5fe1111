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
//
// The work unit is 32 consecutive tokens, one run of a packed matrix. Keys: one lane per token, each
// lane decoding its token's codes from words that the warp reads as 128-byte lines; values: one lane per
// D/32 channels (a 16-byte load per plane). Each warp loads the next unit while it computes the current.
#include <cuda_fp16.h>
#include "kvmix_format.cuh"

namespace {

using kvmix::RUN;
constexpr int WARPS = 4;
constexpr int THREADS = WARPS * 32;
constexpr int MAX_VALUE_GROUPS = 4;  // D / min(G, D) for D <= 128 and G >= 32
constexpr int GROUP_PITCH = 33;      // per-group stride of the value-pass scratch: lanes of different groups use distinct banks
#define NEG_INF (-__int_as_float(0x7F800000))  // -inf; a macro: __int_as_float is not constexpr

// One stream of a cache; written once by io.kvmix.cuda.cache.DeviceBatchKvCache (little-endian, this order).
struct StreamTables {
    const unsigned long long* blocks;  // [batch][tableStride]
    const unsigned long long* chunks;  // [batch][tableStride]
    const __half* sinks;               // [batch][kvHeads][S][D]
    long long headStride;
    int bits;
    int reserved;
};

struct CacheParams {
    StreamTables keys;
    StreamTables values;
    int kvHeads;
    int groupSize;
    int sinks;
    int window;       // sliding window W, 0 for none
    int tableStride;
    int reserved;
};

template <int D, int GQ>
struct Layout {
    static constexpr int CPL = D / 32;  // channels per lane in the value pass
    // per-warp scratch: keys q*scale [planes][GQ][D]; values p*scale [planes][GQ][MAX_VALUE_GROUPS][GROUP_PITCH];
    // final sums [GQ][D]. Two planes for 3-bit codes (low 2 bits, high bit), else one.
    static constexpr int KEY_SCRATCH = 2 * GQ * D;
    static constexpr int VALUE_SCRATCH = 2 * GQ * MAX_VALUE_GROUPS * GROUP_PITCH;
    static constexpr int SCRATCH = KEY_SCRATCH > VALUE_SCRATCH ? KEY_SCRATCH : VALUE_SCRATCH;
    // static shared floats: q [GQ][D], scratch [WARPS][SCRATCH], reduction [WARPS][GQ], max/sum [2][GQ]
    static constexpr int FIXED = GQ * D + WARPS * SCRATCH + WARPS * GQ + 2 * GQ;
};

// Where the 32 tokens of one unit live for this CTA's head (0: nothing of that kind to read).
struct UnitSources {
    unsigned long long keyMatrix;    // packed key matrix of the unit's block
    unsigned long long keyRows;      // fp16 key row of the unit's first token
    unsigned long long valueMatrix;
    unsigned long long valueRows;
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Asks L2 for the fp16 rows of one unit (RUN rows of D channels, contiguous in an FP chunk), one 128-byte
// line per lane and step, so that the row reads of the unit's turn find them there. A prefetch holds no
// registers and has no result to wait for.
template <int D>
__device__ __forceinline__ void prefetch_unit_rows(unsigned long long rows) {
    constexpr int LINE = 128;
    constexpr int BYTES = RUN * D * (int) sizeof(__half);
#pragma unroll
    for (int at = (threadIdx.x % 32) * LINE; at < BYTES; at += 32 * LINE) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(rows + at));
    }
}

// The packed key words and metadata one lane needs for one unit: lane axis = G tokens (this lane's
// token), pack axis = D channels, one (scale, min) per channel (this lane loads channels lane + 32 i).
template <int BITS, int D>
struct KeyUnit {
    static constexpr int RUNS = D / RUN;
    uint32_t w[RUNS][BITS];
    __half scale[RUNS];
    __half min[RUNS];

    __device__ __forceinline__ void load(unsigned long long matrix, int groupSize, int laneInBlock) {
        if (matrix == 0) return;
        const int lane = threadIdx.x % 32;
        const uint32_t* words = reinterpret_cast<const uint32_t*>(matrix);
#pragma unroll
        for (int r = 0; r < RUNS; r++)
#pragma unroll
            for (int k = 0; k < BITS; k++) w[r][k] = __ldg(words + (r * BITS + k) * groupSize + laneInBlock);
        const __half* scales = reinterpret_cast<const __half*>(matrix + 4ull * RUNS * BITS * groupSize);
#pragma unroll
        for (int r = 0; r < RUNS; r++) {
            scale[r] = scales[lane + 32 * r];
            min[r] = scales[D + lane + 32 * r];
        }
    }

    // dot_g = sum_c q_c * (code_c * scale_c + min_c) = sum_c (q_c * scale_c) * code_c + sum_c q_c * min_c,
    // with (q_c * scale_c) pre-multiplied by 2^-offset of channel c's code in its half word (InPlace).
    template <int GQ>
    __device__ __forceinline__ void dots(const float* q, float* qScaled, float (&dot)[GQ]) const {
        using Decode = kvmix::InPlace<BITS>;
        float* qLow = qScaled;           // [GQ][D]
        float* qHigh = qScaled + GQ * D;  // [GQ][D], 3-bit codes only
        const int lane = threadIdx.x % 32;
        const float lowWeight = kvmix::pow2(-Decode::lowOffset(lane));
        const float highWeight = kvmix::pow2(Decode::LOW - Decode::highOffset(lane));
        float bias[GQ];
#pragma unroll
        for (int g = 0; g < GQ; g++) bias[g] = 0.0f;
#pragma unroll
        for (int r = 0; r < RUNS; r++) {
            const int c = lane + 32 * r;
            const float sc = __half2float(scale[r]);
            const float mn = __half2float(min[r]);
#pragma unroll
            for (int g = 0; g < GQ; g++) {
                const float qs = q[g * D + c] * sc;
                qLow[g * D + c] = qs * lowWeight;
                if constexpr (Decode::HIGH) qHigh[g * D + c] = qs * highWeight;
                bias[g] += q[g * D + c] * mn;
            }
        }
        __syncwarp();
        float even[GQ], odd[GQ];  // two accumulators per head: shorter dependency chains
#pragma unroll
        for (int g = 0; g < GQ; g++) {
            even[g] = warp_sum(bias[g]);
            odd[g] = 0.0f;
        }
#pragma unroll
        for (int r = 0; r < RUNS; r++) {
            uint32_t lower[BITS], upper[BITS];
            Decode::view(w[r], lower, upper);
#pragma unroll
            for (int i = 0; i < RUN; i += 4) {
                float lo[4];
#pragma unroll
                for (int e = 0; e < 4; e++) lo[e] = Decode::low(lower, upper, i + e);
#pragma unroll
                for (int g = 0; g < GQ; g++) {
                    const float4 qs = *reinterpret_cast<const float4*>(qLow + g * D + r * RUN + i);
                    even[g] = fmaf(qs.x, lo[0], even[g]);
                    odd[g] = fmaf(qs.y, lo[1], odd[g]);
                    even[g] = fmaf(qs.z, lo[2], even[g]);
                    odd[g] = fmaf(qs.w, lo[3], odd[g]);
                }
                if constexpr (Decode::HIGH) {
                    float hi[4];
#pragma unroll
                    for (int e = 0; e < 4; e++) hi[e] = Decode::high(lower, upper, i + e);
#pragma unroll
                    for (int g = 0; g < GQ; g++) {
                        const float4 qs = *reinterpret_cast<const float4*>(qHigh + g * D + r * RUN + i);
                        even[g] = fmaf(qs.x, hi[0], even[g]);
                        odd[g] = fmaf(qs.y, hi[1], odd[g]);
                        even[g] = fmaf(qs.z, hi[2], even[g]);
                        odd[g] = fmaf(qs.w, hi[3], odd[g]);
                    }
                }
            }
        }
#pragma unroll
        for (int g = 0; g < GQ; g++) dot[g] += even[g] + odd[g];
        __syncwarp();
    }
};

// The packed value words and metadata one lane needs for one unit: lane axis = D channels (this lane's
// CPL channels), pack axis = G tokens (this unit's run), groups of groupLength channels per token (this
// lane loads the metadata of token lane of the run).
template <int BITS, int D>
struct ValueUnit {
    static constexpr int CPL = D / 32;
    uint32_t w[CPL][BITS];
    __half scale[MAX_VALUE_GROUPS];
    __half min[MAX_VALUE_GROUPS];

    __device__ __forceinline__ void load(unsigned long long matrix, int groupSize, int groups, int run) {
        if (matrix == 0) return;
        const int lane = threadIdx.x % 32;
        const uint32_t* words = reinterpret_cast<const uint32_t*>(matrix);
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
        const __half* scales = reinterpret_cast<const __half*>(matrix + 4ull * (groupSize / RUN) * BITS * D);
        const int token = run * RUN + lane;
#pragma unroll
        for (int grp = 0; grp < MAX_VALUE_GROUPS; grp++) {
            if (grp < groups) {
                scale[grp] = scales[grp * groupSize + token];
                min[grp] = scales[metaCount + grp * groupSize + token];
            }
        }
    }

    // acc_c += sum_t (p_t * scale_tg) * code_tc over the unit's packed tokens, (p_t * scale_tg) pre-multiplied
    // by 2^-offset of token t's code in its half word (InPlace); the sum_t p_t * min_tg part is added per token
    // (lane) into minSum and spread over the group's channels at the end.
    template <int GQ>
    __device__ __forceinline__ void sums(const float (&p)[GQ], bool live, int groups, int groupLength,
                                         float* pScaled, float (&acc)[GQ][D / 32],
                                         float (&minSum)[GQ][MAX_VALUE_GROUPS]) const {
        using Decode = kvmix::InPlace<BITS>;
        constexpr int PLANE = GQ * MAX_VALUE_GROUPS * GROUP_PITCH;  // floats of one plane's table
        const int lane = threadIdx.x % 32;
        const float lowWeight = kvmix::pow2(-Decode::lowOffset(lane));
        const float highWeight = kvmix::pow2(Decode::LOW - Decode::highOffset(lane));
#pragma unroll
        for (int grp = 0; grp < MAX_VALUE_GROUPS; grp++) {
            if (grp < groups) {
                const float sc = live ? __half2float(scale[grp]) : 0.0f;
                const float mn = live ? __half2float(min[grp]) : 0.0f;
#pragma unroll
                for (int g = 0; g < GQ; g++) {
                    const float ps = live ? p[g] * sc : 0.0f;
                    pScaled[(g * MAX_VALUE_GROUPS + grp) * GROUP_PITCH + lane] = ps * lowWeight;
                    if constexpr (Decode::HIGH) pScaled[PLANE + (g * MAX_VALUE_GROUPS + grp) * GROUP_PITCH + lane] = ps * highWeight;
                    minSum[g][grp] += live ? p[g] * mn : 0.0f;
                }
            }
        }
        __syncwarp();
        const int myGroup = lane * CPL / groupLength;
        uint32_t lower[CPL][BITS], upper[CPL][BITS];
#pragma unroll
        for (int cc = 0; cc < CPL; cc++) Decode::view(w[cc], lower[cc], upper[cc]);
#pragma unroll
        for (int i = 0; i < RUN; i++) {
            float lo[CPL];
#pragma unroll
            for (int cc = 0; cc < CPL; cc++) lo[cc] = Decode::low(lower[cc], upper[cc], i);
#pragma unroll
            for (int g = 0; g < GQ; g++) {
                const float ps = pScaled[(g * MAX_VALUE_GROUPS + myGroup) * GROUP_PITCH + i];
#pragma unroll
                for (int cc = 0; cc < CPL; cc++) acc[g][cc] = fmaf(ps, lo[cc], acc[g][cc]);
            }
            if constexpr (Decode::HIGH) {
                float hi[CPL];
#pragma unroll
                for (int cc = 0; cc < CPL; cc++) hi[cc] = Decode::high(lower[cc], upper[cc], i);
#pragma unroll
                for (int g = 0; g < GQ; g++) {
                    const float ps = pScaled[PLANE + (g * MAX_VALUE_GROUPS + myGroup) * GROUP_PITCH + i];
#pragma unroll
                    for (int cc = 0; cc < CPL; cc++) acc[g][cc] = fmaf(ps, hi[cc], acc[g][cc]);
                }
            }
        }
        __syncwarp();
    }
};

// Dot products of the GQ queries with one fp16 row of D channels.
template <int D, int GQ>
__device__ __forceinline__ void fp_key_dots(const __half* row, const float* q, float (&dot)[GQ]) {
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

// What one CTA knows about its sequence, head and split.
struct SplitView {
    int length, keyPackedEnd, valuePackedEnd;
    int first, last;        // visible tokens [first, last]
    int sinkUnits, unitCount, firstUnit;

    __device__ __forceinline__ int unitStart(int u, int sinks) const {
        return u < sinkUnits ? u * RUN : sinks + (firstUnit + u - sinkUnits) * RUN;
    }
};

// Pass 1 for one key width: scores of every unit of the warp (-inf where not visible).
template <int BITS, int D, int GQ>
__device__ void key_pass(const CacheParams& cache, const SplitView& v, const UnitSources* sources, const float* q,
                         float* qScaled, float softmaxScale, float* scores, int scoreStride) {
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int G = cache.groupSize;
    auto laneInBlock = [&](int u) {
        const int start = v.unitStart(u, cache.sinks);
        return (start - cache.sinks) % G + lane;
    };
    // FP rows of regular units (whole chunk rows; a sink unit may hold fewer than RUN rows) go to L2 a unit ahead.
    auto prefetchRows = [&](int u) {
        if (u >= v.sinkUnits && sources[u].keyRows != 0) prefetch_unit_rows<D>(sources[u].keyRows);
    };
    KeyUnit<BITS, D> current;
    if (warp < v.unitCount) {
        prefetchRows(warp);
        current.load(sources[warp].keyMatrix, G, laneInBlock(warp));
    }
    for (int u = warp; u < v.unitCount; u += WARPS) {
        KeyUnit<BITS, D> next;
        if (u + WARPS < v.unitCount) {
            prefetchRows(u + WARPS);
            next.load(sources[u + WARPS].keyMatrix, G, laneInBlock(u + WARPS));
        }
        const int start = v.unitStart(u, cache.sinks);
        const int t = start + lane;
        const bool isSink = u < v.sinkUnits;
        const bool visible = t >= v.first && t <= v.last && (!isSink || t < cache.sinks);
        float dot[GQ];
#pragma unroll
        for (int g = 0; g < GQ; g++) dot[g] = 0.0f;
        if (sources[u].keyMatrix != 0) current.template dots<GQ>(q, qScaled, dot);
        if (sources[u].keyRows != 0 && visible && (isSink || t >= v.keyPackedEnd)) {
#pragma unroll
            for (int g = 0; g < GQ; g++) dot[g] = 0.0f;
            fp_key_dots<D, GQ>(reinterpret_cast<const __half*>(sources[u].keyRows) + (size_t) lane * D, q, dot);
        }
#pragma unroll
        for (int g = 0; g < GQ; g++) scores[g * scoreStride + u * RUN + lane] = visible ? dot[g] * softmaxScale : NEG_INF;
        current = next;
    }
}

// Local softmax of one CTA: max and sum per query head over its tokens (into rowMax, rowSum); the scores
// become exp(s - max). Every thread of the CTA calls it.
template <int GQ>
__device__ void local_softmax(float* scores, int scoreStride, float* reduction, float* rowMax, float* rowSum) {
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
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

    __syncthreads();
}

// Pass 2 for one value width: the warp's share of sum_t p_t * v_t.
// The first unit's loads are issued before the softmax, so their latency hides behind it.
template <int BITS, int D, int GQ>
__device__ void value_pass(const CacheParams& cache, const SplitView& v, const UnitSources* sources,
                           float* scores, int scoreStride, float* pScaled, float* reduction, float* rowMax,
                           float* rowSum, float (&acc)[GQ][D / 32]) {
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int G = cache.groupSize;
    const int groupLength = min(G, D);
    const int groups = D / groupLength;
    float minSum[GQ][MAX_VALUE_GROUPS];
#pragma unroll
    for (int g = 0; g < GQ; g++)
#pragma unroll
        for (int grp = 0; grp < MAX_VALUE_GROUPS; grp++) minSum[g][grp] = 0.0f;
    auto runOf = [&](int u) { return ((v.unitStart(u, cache.sinks) - cache.sinks) % G) / RUN; };
    auto prefetchRows = [&](int u) {  // as in key_pass
        if (u >= v.sinkUnits && sources[u].valueRows != 0) prefetch_unit_rows<D>(sources[u].valueRows);
    };
    ValueUnit<BITS, D> current;
    if (warp < v.unitCount) {
        prefetchRows(warp);
        current.load(sources[warp].valueMatrix, G, groups, runOf(warp));
    }
    local_softmax<GQ>(scores, scoreStride, reduction, rowMax, rowSum);
    for (int u = warp; u < v.unitCount; u += WARPS) {
        ValueUnit<BITS, D> next;
        if (u + WARPS < v.unitCount) {
            prefetchRows(u + WARPS);
            next.load(sources[u + WARPS].valueMatrix, G, groups, runOf(u + WARPS));
        }
        const int start = v.unitStart(u, cache.sinks);
        const float* p = scores + u * RUN;  // p[g * scoreStride + i] for token start + i
        if (sources[u].valueMatrix != 0) {
            const int t = start + lane;
            const bool live = t < v.valuePackedEnd && t >= v.first && t <= v.last;
            float pt[GQ];
#pragma unroll
            for (int g = 0; g < GQ; g++) pt[g] = p[g * scoreStride + lane];
            current.template sums<GQ>(pt, live, groups, groupLength, pScaled, acc, minSum);
        }
        if (sources[u].valueRows != 0) {
            const bool isSink = u < v.sinkUnits;
            const int fpFrom = max(isSink ? start : max(start, v.valuePackedEnd), v.first);
            const int fpTo = min(min(start + RUN, v.last + 1), isSink ? cache.sinks : start + RUN);
            const __half* rows = reinterpret_cast<const __half*>(sources[u].valueRows);
            for (int t = fpFrom; t < fpTo; t++) {
                fp_value_sums<D, GQ>(rows + (size_t) (t - start) * D, p + (t - start), scoreStride, acc);
            }
        }
        current = next;
    }
    // The min terms were summed per token (lane); every channel of a group gets its group's total.
    const int myGroup = lane * (D / 32) / groupLength;
#pragma unroll
    for (int g = 0; g < GQ; g++) {
#pragma unroll
        for (int grp = 0; grp < MAX_VALUE_GROUPS; grp++) {
            const float total = warp_sum(minSum[g][grp]);
            if (grp == myGroup) {
#pragma unroll
                for (int cc = 0; cc < D / 32; cc++) acc[g][cc] += total;
            }
        }
    }
}

template <int D, int GQ>
__device__ void attend_split(const CacheParams* __restrict__ cacheParams, const int* __restrict__ sequenceState,
                             const void* __restrict__ query, int queryHalf, float softmaxScale, int splitUnits,
                             float* __restrict__ partialAcc, float* __restrict__ partialStats) {
    using L = Layout<D, GQ>;
    constexpr int CPL = L::CPL;
    __shared__ __align__(16) float shared[L::FIXED];
    extern __shared__ __align__(16) unsigned char dynamicShared[];
    const CacheParams cache = *cacheParams;
    const int split = blockIdx.x;
    const int head = blockIdx.y;
    const int seq = blockIdx.z;
    const int splits = gridDim.x;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int queryHeads = cache.kvHeads * GQ;

    float* q = shared;                                    // [GQ][D]
    float* scratch = q + GQ * D + warp * L::SCRATCH;      // this warp's
    float* reduction = q + GQ * D + WARPS * L::SCRATCH;   // [WARPS][GQ]
    float* rowMax = reduction + WARPS * GQ;               // [GQ]
    float* rowSum = rowMax + GQ;                          // [GQ]

    SplitView v;
    v.length = sequenceState[seq * 3];
    v.keyPackedEnd = sequenceState[seq * 3 + 1];
    v.valuePackedEnd = sequenceState[seq * 3 + 2];
    v.last = v.length - 1;
    v.first = cache.window > 0 ? max(0, v.last - cache.window + 1) : 0;
    v.sinkUnits = split == 0 ? (cache.sinks + RUN - 1) / RUN : 0;
    v.unitCount = v.sinkUnits + splitUnits;
    v.firstUnit = split * splitUnits;
    const int scoreStride = v.unitCount * RUN;
    UnitSources* sources = reinterpret_cast<UnitSources*>(dynamicShared);           // [unitCount]
    float* scores = reinterpret_cast<float*>(sources + v.unitCount);                // [GQ][unitCount * 32]

    for (int i = threadIdx.x; i < GQ * D; i += THREADS) {
        const size_t at = ((size_t) seq * queryHeads + head * GQ) * D + i;
        q[i] = queryHalf ? __half2float(reinterpret_cast<const __half*>(query)[at])
                         : reinterpret_cast<const float*>(query)[at];
    }
    // Where each unit's tokens live: one table lookup per unit, done once for the CTA.
    for (int u = threadIdx.x; u < v.unitCount; u += THREADS) {
        const int start = v.unitStart(u, cache.sinks);
        UnitSources src = {0, 0, 0, 0};
        if (start <= v.last && start + RUN > v.first) {
            if (u < v.sinkUnits) {
                const size_t row = (((size_t) seq * cache.kvHeads + head) * cache.sinks + start) * D;
                src.keyRows = reinterpret_cast<unsigned long long>(cache.keys.sinks + row);
                src.valueRows = reinterpret_cast<unsigned long long>(cache.values.sinks + row);
            } else {
                const int j = (start - cache.sinks) / cache.groupSize;
                const int inBlock = start - cache.sinks - j * cache.groupSize;
                const size_t slot = (size_t) seq * cache.tableStride + j;
                const size_t row = ((size_t) head * cache.groupSize + inBlock) * D * sizeof(__half);
                if (start < v.keyPackedEnd) src.keyMatrix = cache.keys.blocks[slot] + head * cache.keys.headStride;
                if (start + RUN > v.keyPackedEnd) src.keyRows = cache.keys.chunks[slot] + row;
                if (start < v.valuePackedEnd) src.valueMatrix = cache.values.blocks[slot] + head * cache.values.headStride;
                if (start + RUN > v.valuePackedEnd) src.valueRows = cache.values.chunks[slot] + row;
            }
        }
        sources[u] = src;
    }
    __syncthreads();

    switch (cache.keys.bits) {
        case 1: key_pass<1, D, GQ>(cache, v, sources, q, scratch, softmaxScale, scores, scoreStride); break;
        case 2: key_pass<2, D, GQ>(cache, v, sources, q, scratch, softmaxScale, scores, scoreStride); break;
        case 3: key_pass<3, D, GQ>(cache, v, sources, q, scratch, softmaxScale, scores, scoreStride); break;
        default: key_pass<4, D, GQ>(cache, v, sources, q, scratch, softmaxScale, scores, scoreStride); break;
    }
    __syncthreads();

    // Pass 2 (with the softmax): weighted sum of the values.
    float acc[GQ][CPL];
#pragma unroll
    for (int g = 0; g < GQ; g++)
#pragma unroll
        for (int cc = 0; cc < CPL; cc++) acc[g][cc] = 0.0f;
    switch (cache.values.bits) {
        case 1: value_pass<1, D, GQ>(cache, v, sources, scores, scoreStride, scratch, reduction, rowMax, rowSum, acc); break;
        case 2: value_pass<2, D, GQ>(cache, v, sources, scores, scoreStride, scratch, reduction, rowMax, rowSum, acc); break;
        case 3: value_pass<3, D, GQ>(cache, v, sources, scores, scoreStride, scratch, reduction, rowMax, rowSum, acc); break;
        default: value_pass<4, D, GQ>(cache, v, sources, scores, scoreStride, scratch, reduction, rowMax, rowSum, acc); break;
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

// cache:          CacheParams (written once per cache)
// sequenceState:  [batch][3] = length, keys' packedEnd, values' packedEnd
// query:          [batch][kvHeads * GQ][D], fp16 if queryHalf else fp32
// partialAcc:     [batch][queryHeads][splits][D] fp32;  partialStats: [batch][queryHeads][splits][2] (max, sum)
// dynamic shared: unitCount * (32 + GQ * 32 * 4) bytes, unitCount = splitUnits + sink units
#define KVMIX_ATTEND(D, GQ)                                                                                  \
    extern "C" __global__ void __launch_bounds__(THREADS) kvmix_attend_d##D##_g##GQ(                         \
            const CacheParams* cache, const int* sequenceState, const void* query, int queryHalf,           \
            float softmaxScale, int splitUnits, float* partialAcc, float* partialStats) {                   \
        attend_split<D, GQ>(cache, sequenceState, query, queryHalf, softmaxScale, splitUnits, partialAcc,   \
                            partialStats);                                                                   \
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
extern "C" __global__ void kvmix_attend_combine(const float* __restrict__ partialAcc,
                                                const float* __restrict__ partialStats, int splits, int headDim,
                                                void* out, int outHalf) {
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
