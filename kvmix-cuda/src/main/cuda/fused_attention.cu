// Fused decode attention over the device KV cache, flash-decoding style, on the tensor cores.
//
// Each sequence of the batch has one query token (its newest position). kvmix_attend_d<D>_g<GQ>_k<KB>v<VB>
// splits every sequence's history into runs of units (32 tokens): its packed units (before the first unit
// with fp16 rows in either stream) into packedSplits runs of splitUnits, the rest (the FP window, several
// times the bytes and work per unit) into runs of fpSplitUnits; grid (kvHeads, batch, splits), the last
// split first. Split 0 also takes the sink units. One CTA is one warp; it
// serves the GQ query heads that share a KV head, walks its split one unit (32 tokens) at a time with an
// online softmax, and writes the unnormalised partial output with its max and sum (log2 domain).
// kvmix_attend_combine merges the splits of each (sequence, query head).
//
// Tokens of one sequence and stream (FORMAT.md section 4), S sinks, G group size:
//   [0, S)                 sink rows          sinks[batch][kvHeads][S][D] fp16
//   [S, packedEnd)         packed blocks      block j (tokens S + j*G ..): blockTable[seq][j] + head * headStride
//   [packedEnd, length)    FP rows            chunk j: fpTable[seq][j], rows [kvHeads][G][D] fp16
// packedEnd is per stream (keys and values may differ) and never above the last append's first token:
// that step's own tokens are read in full precision, as on the CPU.
//
// Both products of a unit are m16n8k16 fp16 mma with fp32 accumulation, the codes read straight from the
// packed words:
//   scores  [32 tokens][heads]    = codes [tokens][channels] x (q * scale)  [channels][heads]
//   outputs [D channels][heads]  += codes [channels][tokens] x (p * scale)  [tokens][heads]
// One AND cuts two codes out of a packed word into the two halves of a register, where they read as fp16
// subnormals code * 2^(shift - 24) (exact); the right-hand side carries 2^-shift, the accumulators 2^-24.
// The mma's k order is whatever order those pairs come in (PlanePairs); the right-hand sides are built in
// that order into shared memory and loaded with ldmatrix. A right-hand value v goes in as two fp16
// columns, hi = fp16(v) and lo = fp16(v - hi) (both accumulate into one head: about 22 bits of v), so the
// result matches an fp32 computation to ~1e-6 relative. fp16 rows (sinks, the FP window) take the same
// path with their values as the left-hand side.
#include <cuda_fp16.h>
#include "kvmix_format.cuh"

namespace {

using kvmix::RUN;
constexpr int LANES = 32;
constexpr float LOG2E = 1.4426950408889634f;
constexpr float TWO_POW_24 = 16777216.0f;
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

// Where the 32 tokens of one unit live for this CTA's head (0: nothing of that kind to read).
struct UnitSources {
    unsigned long long keyMatrix;    // packed key matrix of the unit's block
    unsigned long long keyRows;      // fp16 key row of the unit's first token
    unsigned long long valueMatrix;
    unsigned long long valueRows;
    int inBlock;                     // the unit's first token within its block (0 for sinks)
    int plain;                       // 1: all 32 tokens visible and read from both packed matrices
    int reserved[2];
};
constexpr int UNIT_SOURCES_BYTES = 48;  // DeviceBatchKvCache.attentionSharedBytes
static_assert(sizeof(UnitSources) == UNIT_SOURCES_BYTES, "UnitSources layout");

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sums GQ values over the warp and leaves lane l the total of value l / (32 / GQ): halving exchanges (offsets 16,
// 8, .. keep the lane's half of the heads) then full sums within each head's lanes, log2(GQ) + ... shuffles in
// all (GQ = 8: 9 instead of 40).
template <int GQ>
__device__ __forceinline__ float warp_sum_scatter(float (&v)[GQ]) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int half = GQ / 2, o = 16; half >= 1; half /= 2, o /= 2) {
        const bool upper = (lane & o) != 0;
#pragma unroll
        for (int i = 0; i < half; i++) {
            const float keep = upper ? v[i + half] : v[i];
            const float send = upper ? v[i] : v[i + half];
            v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
        }
    }
    float total = v[0];
#pragma unroll
    for (int o = 16 / GQ; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
    return total;
}

__device__ __forceinline__ uint32_t component(const uint4& v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// ---- tensor-core primitives -------------------------------------------------------------------------

// c += a x b for one m16n8k16 tile (a: 4 registers of fp16 pairs, b: 2, c: fp32).
__device__ __forceinline__ void mma_tile(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The b fragments of two k-tiles from 32 consecutive k-rows of 8 fp16 columns (16 bytes each):
// b[0], b[1] for rows 0-15, b[2], b[3] for rows 16-31. Lane i names row i.
__device__ __forceinline__ void load_b_fragments(const uint4* rows, uint32_t (&b)[4]) {
    const unsigned at = static_cast<unsigned>(__cvta_generic_to_shared(rows + threadIdx.x % LANES));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(at)
                 : "memory");
}

// 16 bytes from global to shared memory without passing through registers (sm_80+), and its group bookkeeping.
__device__ __forceinline__ void copy_async(uint4* to, unsigned long long from) {
    const unsigned at = static_cast<unsigned>(__cvta_generic_to_shared(to));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(at), "l"(from) : "memory");
}
__device__ __forceinline__ void commit_async() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int PENDING>
__device__ __forceinline__ void wait_async() { asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory"); }

// Right-hand-side rows: one k-row holds a value per head, split into fp16 hi and lo parts. With up to 4
// heads a row is [hi0, lo0, hi1, lo1, ...] (column 2g + part; unused columns zero) and one set of rows
// exists; with 8 heads set 0 holds the hi parts and set 1 (setStride rows further) the lo parts.
template <int GQ>
struct RhsLayout {
    static constexpr int SETS = GQ == 8 ? 2 : 1;

    __device__ __forceinline__ static void store(uint4* rows, int setStride, int row, const float (&v)[GQ]) {
        auto split = [](float x, __half& hi, __half& lo) {
            hi = __float2half_rn(x);
            lo = __float2half_rn(x - __half2float(hi));
        };
        auto pack = [](__half a, __half b) {
            const __half2 h = __halves2half2(a, b);
            return *reinterpret_cast<const uint32_t*>(&h);
        };
        if constexpr (GQ == 8) {
            uint32_t hi[4], lo[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                __half h0, l0, h1, l1;
                split(v[2 * e], h0, l0);
                split(v[2 * e + 1], h1, l1);
                hi[e] = pack(h0, h1);
                lo[e] = pack(l0, l1);
            }
            rows[row] = make_uint4(hi[0], hi[1], hi[2], hi[3]);
            rows[setStride + row] = make_uint4(lo[0], lo[1], lo[2], lo[3]);
        } else {
            uint32_t w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
            for (int g = 0; g < GQ; g++) {
                __half h, l;
                split(v[g], h, l);
                w[g] = pack(h, l);
            }
            rows[row] = make_uint4(w[0], w[1], w[2], w[3]);
        }
    }

    // c += a x (rows of one k-tile pair): kk picks the k-tile within the pair loaded by load().
    struct Fragments {
        uint32_t hi[4];
        uint32_t lo[4];
    };
    __device__ __forceinline__ static void load(const uint4* rows, int setStride, Fragments& f) {
        load_b_fragments(rows, f.hi);
        if constexpr (SETS == 2) load_b_fragments(rows + setStride, f.lo);
    }
    __device__ __forceinline__ static void mma(float (&c)[4], const uint32_t (&a)[4], const Fragments& f, int kk) {
        mma_tile(c, a, f.hi[2 * kk], f.hi[2 * kk + 1]);
        if constexpr (SETS == 2) mma_tile(c, a, f.lo[2 * kk], f.lo[2 * kk + 1]);
    }

    // Heads of a lane's accumulator columns: c[0]/c[2] (column 2j) and c[1]/c[3] (column 2j + 1), j = lane % 4.
    // With up to 4 heads both columns are head j (hi and lo parts; j >= GQ: nothing); with 8, heads 2j and 2j + 1.
    __device__ __forceinline__ static int columnHead(int j, int column) { return GQ == 8 ? 2 * j + column : j; }
    __device__ __forceinline__ static bool ownsHeads(int j) { return GQ == 8 || j < GQ; }
};

// ---- how the codes of one bit plane feed the mma ----------------------------------------------------
//
// A "row" is one lane-axis element of a packed matrix (a token for keys, a channel for values) with its PACK
// codes along the pack axis (keys: D channels; values: the unit's 32 tokens). Plane words hold codes of LOW
// bits (FORMAT.md 3.1; a 3-bit width is a 2-bit plane plus a 1-bit plane). The four lanes that share an mma
// row (j = lane % 4) split its words: lane j decodes pairs j * PER_LANE .. + PER_LANE - 1 of the row, pair p
// being the codes at bits b and 16 + b of a word, b = 8 * view + LOW * q. After a right shift by the
// shift-unit's start, pair i of the unit sits at bits LOW * i and 16 + LOW * i: one AND gives both.
// The lane's pair P feeds k-tile P / 2, register half P % 2 (k slots 2j, 2j + 1 or 2j + 8, 2j + 9).
template <int LOW, int PACK>
struct PlanePairs {
    static constexpr int PER_WORD = 16 / LOW;
    static constexpr int PER_VIEW = 8 / LOW;
    static constexpr int PER_LANE = PACK / 8;
    static constexpr int PER_SHIFT = PER_LANE < PER_VIEW ? PER_LANE : PER_VIEW;  // pairs cut from one shifted word
    static constexpr int WORDS = PER_LANE > PER_WORD ? PER_LANE / PER_WORD : 1;  // words per row and lane

    // The lane's plane word that its shift-unit k reads (as an offset from its first word).
    __device__ __forceinline__ static constexpr int wordSlot(int k) { return k * PER_SHIFT / PER_WORD; }
    __device__ __forceinline__ static int firstWord(int j) { return j * PER_LANE / PER_WORD; }
    __device__ __forceinline__ static int shift(int j, int k) {
        const int p = j * PER_LANE + k * PER_SHIFT;
        return 8 * ((p % PER_WORD) / PER_VIEW) + LOW * (p % PER_VIEW);
    }
    __device__ __forceinline__ static constexpr uint32_t mask(int i) {
        return (((1u << LOW) - 1u) * 0x00010001u) << (LOW * i);
    }
    // The two codes of lane j's pair P, as fp16 subnormals code * 2^(exponent(P) - 24).
    __device__ __forceinline__ static uint32_t pair(uint32_t word, int j, int P) {
        return (word >> shift(j, P / PER_SHIFT)) & mask(P % PER_SHIFT);
    }
    __device__ __forceinline__ static int exponent(int P) { return LOW * (P % PER_SHIFT); }
    // Pack-axis index of the code in half h (0: low) of lane j's pair P.
    __device__ __forceinline__ static int packIndex(int j, int P, int h) {
        const int p = j * PER_LANE + P;
        const int word = p / PER_WORD;
        const int bit = 8 * ((p % PER_WORD) / PER_VIEW) + LOW * (p % PER_VIEW) + 16 * h;
        return 32 * (word / LOW) + (32 / LOW) * (word % LOW) + bit / LOW;
    }
    // Index of plane word w of a row among the matrix's words of one run position: words of run r are
    // r * BITS + (plane's first word) + 0 .. LOW - 1.
    __device__ __forceinline__ static int matrixWord(int w, int bits, int planeBase) {
        return (w / LOW) * bits + planeBase + w % LOW;
    }
};

// The planes of a width: plane 0 is the low plane (all widths), plane 1 the high bit of 3-bit codes.
template <int BITS>
struct Planes {
    static constexpr int COUNT = kvmix::BitPlanes<BITS>::HIGH ? 2 : 1;
    static constexpr int LOW0 = kvmix::BitPlanes<BITS>::LOW;
};

// A k-row r (0 .. 31 within a pair of k-tiles) names lane j's pair P and half h: the b-fragment layout.
struct KRow {
    int j, P, h;
    __device__ __forceinline__ explicit KRow(int r) {
        const int kt = r / 16, slot = r % 16;
        j = (slot % 8) / 2;
        P = 2 * kt + slot / 8;
        h = slot % 2;
    }
};

// ---- per-warp state ----------------------------------------------------------------------------------

template <int D, int GQ, int KB, int VB>
struct Config {
    static constexpr int KP = Planes<KB>::COUNT;
    static constexpr int VP = Planes<VB>::COUNT;
    static constexpr int MAX_GROUPS = D / 32;     // value groups per token (group length min(G, D) >= 32)
    static constexpr int SETS = RhsLayout<GQ>::SETS;
    // right-hand-side rows of one unit: keys KP * D, or values VP * MAX_GROUPS * 32 packed + 32 fp16
    static constexpr int KEY_ROWS = KP * D;
    static constexpr int VALUE_FP_ROW = VP * MAX_GROUPS * 32;
    static constexpr int VALUE_ROWS = VALUE_FP_ROW + 32;
    static constexpr int UNIT_ROWS = KEY_ROWS > VALUE_ROWS ? KEY_ROWS : VALUE_ROWS;
    using KeyPlane0 = PlanePairs<Planes<KB>::LOW0, D>;
    using KeyPlane1 = PlanePairs<1, D>;
    using ValuePlane0 = PlanePairs<Planes<VB>::LOW0, RUN>;
    using ValuePlane1 = PlanePairs<1, RUN>;
};

// The lane's part of one unit's packed words and metadata, in registers (Attention::fetch).
template <int D, int KB, int VB>
struct UnitLoad {
    using C = Config<D, 1, KB, VB>;
    static constexpr int KW0 = C::KeyPlane0::WORDS;
    uint4 keyWords0[KW0];            // [lane's word] x 4 tokens (4 rho .. 4 rho + 3)
    uint4 keyWords1[1];              // high plane (3-bit keys)
    __half keyScales[C::KP][D / 32]; // scale of the channel of each of the lane's key k-rows
    uint32_t keyMins[D / 64];        // mins of channels (D / 32) * lane ..: fp16 pairs
    static_assert(C::ValuePlane0::WORDS == 1 && C::ValuePlane1::WORDS == 1, "a lane reads one word per value plane");
    uint4 valueWords[C::VP][D / 32]; // [plane][chunk a] x 4 channels (32 a + 4 rho ..)
    __half valueScales[C::VP][C::MAX_GROUPS];  // per group, of the token of the lane's value k-row of each plane
    __half valueMins[C::MAX_GROUPS];           // per group, of the token of the lane's plane-0 value k-row
};

// A unit's packed data, copied from global memory by cp.async a few units ahead of its turn (Attention::run):
// the words of the unit's 32 tokens and its group metadata, 16-byte aligned slices of its two matrices.
template <int D, int KB, int VB>
struct Stage {
    using C = Config<D, 1, KB, VB>;
    static constexpr int KEY_WORDS = (D / 32) * KB * RUN;  // [matrix word][32 tokens] uint32
    static constexpr int VALUE_WORDS = VB * D;             // [run word][D channels] uint32, the unit's run
    uint4 keyWords[KEY_WORDS / 4];
    uint4 keyMeta[4 * D / 16];                             // scales[D], then mins[D], fp16
    uint4 valueWords[VALUE_WORDS / 4];
    uint4 valueMeta[2 * C::MAX_GROUPS * RUN * 2 / 16];     // scales[group][32 tokens], then mins, fp16
};
constexpr int STAGES = 2;  // units in flight: the one being computed and the next being copied (3 measured slower)

// Per-lane indices into a Stage, the same for every unit of the CTA.
template <int D, int KB, int VB>
struct LaneOffsets {
    using C = Config<D, 1, KB, VB>;
    int keyWords0;          // uint4 index of the lane's first low-plane key word (tokens 4 rho ..)
    int keyWords1;          // the same for the high plane
    int valueWords[C::VP];  // uint4 index of the lane's value word (channels 4 rho ..) of each plane
};

template <int D, int GQ, int KB, int VB>
struct Shared {
    using C = Config<D, GQ, KB, VB>;
    uint4 unitRows[C::SETS * C::UNIT_ROWS];   // this unit's right-hand sides
    uint4 fpKeyRows[C::SETS * D];             // q (normalised) for fp16 keys, built once
    float qn[GQ][D];                          // q * 2^-E[g]
    float keyWeights[C::KP * D][GQ];          // per key k-row: qn of its channel * 2^-exponent * plane weight
    float p[GQ][RUN];                         // scores, then probabilities, of the unit's tokens
    Stage<D, KB, VB> stages[STAGES];
    // per lane: the channels of its key k-rows (plane-major, two 16-bit indices a word), read back by fetch()
    // with one load rather than recomputed each unit
    uint32_t keyChannels[LANES][C::KP * D / 64];
};

// What one CTA knows about its sequence, head and split.
struct SplitView {
    int length, keyPackedEnd, valuePackedEnd;
    int first, last;        // visible tokens [first, last]
    int sinkUnits, unitCount, firstUnit;

    __device__ __forceinline__ int unitStart(int u, int sinks) const {
        return u < sinkUnits ? u * RUN : sinks + (firstUnit + u - sinkUnits) * RUN;
    }
};

template <int D, int GQ, int KB, int VB>
struct Attention {
    using C = Config<D, GQ, KB, VB>;
    using Rhs = RhsLayout<GQ>;
    using Load = UnitLoad<D, KB, VB>;
    static constexpr int UNIT_SET = C::UNIT_ROWS;  // set stride of unitRows
    static constexpr int KCH = D / 32;               // key k-rows per lane and plane (rows lane + 32 i)

    Shared<D, GQ, KB, VB>& sh;
    const CacheParams& cache;
    const SplitView& v;
    const UnitSources* sources;
    int lane, j, rho;
    int groupLength, groups;
    // per lane, fixed for the CTA
    int keyChannel[C::KP][KCH];   // channel of key k-row lane + 32 i of each plane
    int valueToken[C::VP];        // token (in the unit) of value k-row lane, per plane
    int valueExponent[C::VP];
    int fpValueToken;             // token of fp16-value k-row lane
    LaneOffsets<D, KB, VB> offsets;
    float qScale[GQ];             // 2^E[g] * softmax scale * log2(e)
    // running state
    // softmax: lane l serves head l / LANES_PER_HEAD, tokens GQ * (l % LANES_PER_HEAD) .. + GQ - 1 of each unit
    static constexpr int LANES_PER_HEAD = LANES / GQ;
    float headMax, headSum;       // the lane's head: running max (log2 domain) and the lane's part of the sum
    float acc[D / 16][4];         // value accumulators, m-tile mt: channels 32 (mt/2) + 4 rho + 2 (mt%2) + {0, 1}
    float minSum[GQ][C::MAX_GROUPS];  // per lane (token) sum of p * min, per group
    int valueExp;                 // Z: acc holds true sums * 2^(Z - 24)
    bool haveValueExp;

    __device__ Attention(Shared<D, GQ, KB, VB>& s, const CacheParams& c, const SplitView& view, const UnitSources* src)
        : sh(s), cache(c), v(view), sources(src) {
        lane = threadIdx.x % LANES;
        j = lane % 4;
        rho = lane / 4;
        groupLength = min(cache.groupSize, D);
        groups = D / groupLength;
        valueExp = 24;
        haveValueExp = false;
        headMax = NEG_INF;
        headSum = 0.0f;
#pragma unroll
        for (int g = 0; g < GQ; g++) {
#pragma unroll
            for (int grp = 0; grp < C::MAX_GROUPS; grp++) minSum[g][grp] = 0.0f;
        }
#pragma unroll
        for (int mt = 0; mt < D / 16; mt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][e] = 0.0f;
    }

    // q normalised per head, the fixed right-hand sides and the lane's k-row maps.
    __device__ void prepare(const void* query, bool queryHalf, size_t queryAt, float softmaxScale) {
#pragma unroll
        for (int g = 0; g < GQ; g++) {
            float x[D / 32];
            float largest = 0.0f;
#pragma unroll
            for (int i = 0; i < D / 32; i++) {
                const size_t at = queryAt + g * D + lane + 32 * i;
                x[i] = queryHalf ? __half2float(reinterpret_cast<const __half*>(query)[at])
                                 : reinterpret_cast<const float*>(query)[at];
                largest = fmaxf(largest, fabsf(x[i]));
            }
            largest = warp_max(largest);
            // 2^E >= largest, so |qn| <= 1 and q * scale (scale <= 65504) stays within fp16
            int e = 0;
            if (largest > 0.0f && largest < __int_as_float(0x7F800000)) frexpf(largest, &e);
            const float down = ldexpf(1.0f, -e);
#pragma unroll
            for (int i = 0; i < D / 32; i++) sh.qn[g][lane + 32 * i] = x[i] * down;
            qScale[g] = ldexpf(1.0f, e) * softmaxScale * LOG2E;
        }
        __syncwarp();
        // key k-rows of each plane: channel and 2^-exponent * weight (the high plane of 3-bit codes weighs 4)
#pragma unroll
        for (int pl = 0; pl < C::KP; pl++) {
#pragma unroll
            for (int i = 0; i < KCH; i++) {
                const int r = lane + 32 * i;
                const KRow k(r % 32);
                const int P = k.P + 4 * (r / 32);  // k-tile pair r / 32 adds 2 k-tiles: 4 pairs
                int channel, exponent;
                if (pl == 0) {
                    channel = C::KeyPlane0::packIndex(k.j, P, k.h);
                    exponent = C::KeyPlane0::exponent(P);
                } else {
                    channel = C::KeyPlane1::packIndex(k.j, P, k.h);
                    exponent = C::KeyPlane1::exponent(P) - Planes<KB>::LOW0;
                }
                keyChannel[pl][i] = channel;
                uint32_t& slot = sh.keyChannels[lane][(pl * KCH + i) / 2];
                slot = (i % 2 == 0 ? 0u : slot) | (uint32_t) channel << (16 * (i % 2));
#pragma unroll
                for (int g = 0; g < GQ; g++) sh.keyWeights[pl * D + r][g] = sh.qn[g][channel] * kvmix::pow2(-exponent);
            }
        }
        // fp16 keys: lane j's pair P is channels j * D/4 + 2P, + 1
#pragma unroll
        for (int i = 0; i < KCH; i++) {
            const int r = lane + 32 * i;
            const KRow k(r % 32);
            const int channel = k.j * (D / 4) + 2 * (k.P + 4 * (r / 32)) + k.h;
            float q[GQ];
#pragma unroll
            for (int g = 0; g < GQ; g++) q[g] = sh.qn[g][channel];
            Rhs::store(sh.fpKeyRows, D, r, q);
        }
        // value k-row lane: token and exponent per plane; fp16 values: lane j's pair P is tokens 8j + 2P, + 1
        {
            const KRow k(lane);
            valueToken[0] = C::ValuePlane0::packIndex(k.j, k.P, k.h);
            valueExponent[0] = C::ValuePlane0::exponent(k.P);
            if constexpr (C::VP == 2) {
                valueToken[C::VP - 1] = C::ValuePlane1::packIndex(k.j, k.P, k.h);
                valueExponent[C::VP - 1] = C::ValuePlane1::exponent(k.P) - Planes<VB>::LOW0;
            }
            fpValueToken = 8 * k.j + 2 * k.P + k.h;
        }
        using K0 = typename C::KeyPlane0;
        using K1 = typename C::KeyPlane1;
        offsets.keyWords0 = K0::matrixWord(K0::firstWord(j), KB, 0) * (RUN / 4) + rho;
        offsets.keyWords1 = K1::matrixWord(K1::firstWord(j), KB, Planes<KB>::LOW0) * (RUN / 4) + rho;
        offsets.valueWords[0] = C::ValuePlane0::matrixWord(C::ValuePlane0::firstWord(j), VB, 0) * (D / 4) + rho;
        if constexpr (C::VP == 2) {
            offsets.valueWords[C::VP - 1] =
                    C::ValuePlane1::matrixWord(C::ValuePlane1::firstWord(j), VB, Planes<VB>::LOW0) * (D / 4) + rho;
        }
        __syncwarp();
    }

    // ---- loads ---------------------------------------------------------------------------------------

    // Starts copying unit u's packed slices into st (one cp.async group per unit, committed by run()); its fp16
    // rows go to L2 ahead of their turn (one 128-byte line per lane and step).
    __device__ void issue(int u, Stage<D, KB, VB>& st) const {
        const UnitSources src = sources[u];
        const int G = cache.groupSize;
        using S = Stage<D, KB, VB>;
        if (src.keyMatrix != 0) {
#pragma unroll
            for (int c = lane; c < S::KEY_WORDS / 4; c += LANES) {  // chunk c: matrix word c / 8, tokens 4 (c % 8) ..
                copy_async(st.keyWords + c, src.keyMatrix + 4ull * ((c / 8) * G + src.inBlock) + 16 * (c % 8));
            }
            const unsigned long long meta = src.keyMatrix + 4ull * (D / 32) * KB * G;
#pragma unroll
            for (int c = lane; c < 4 * D / 16; c += LANES) copy_async(st.keyMeta + c, meta + 16 * c);
        }
        if (src.valueMatrix != 0) {
            const unsigned long long words = src.valueMatrix + 4ull * (src.inBlock / RUN) * VB * D;
#pragma unroll
            for (int c = lane; c < S::VALUE_WORDS / 4; c += LANES) copy_async(st.valueWords + c, words + 16 * c);
            // lane's chunk: 64 bytes per group (its 32 tokens) of scales, then of mins; tokens 8 (lane % 4) ..
            static_assert(8 * C::MAX_GROUPS <= LANES, "one chunk of value metadata per lane");
            const unsigned long long meta = src.valueMatrix + 4ull * (G / RUN) * VB * D;
            if (lane < 8 * groups) {
                const int q = lane / 4;
                const int kind = q >= groups ? 1 : 0;  // 0: scales, 1: mins
                const int grp = q - kind * groups;
                copy_async(st.valueMeta + (kind * C::MAX_GROUPS + grp) * 4 + lane % 4,
                           meta + 2ull * ((kind * groups + grp) * G + src.inBlock) + 16 * (lane % 4));
            }
        }
        if (u >= v.sinkUnits) {
            constexpr int BYTES = RUN * D * (int) sizeof(__half);
#pragma unroll
            for (int at = lane * 128; at < BYTES; at += 32 * 128) {
                if (src.keyRows != 0) asm volatile("prefetch.global.L2 [%0];" ::"l"(src.keyRows + at));
                if (src.valueRows != 0) asm volatile("prefetch.global.L2 [%0];" ::"l"(src.valueRows + at));
            }
        }
    }

    // The lane's part of a copied unit, from shared memory into registers.
    __device__ void fetch(const UnitSources& src, const Stage<D, KB, VB>& st, Load& d) const {
        if (src.keyMatrix != 0) {
#pragma unroll
            for (int w = 0; w < C::KeyPlane0::WORDS; w++) {
                // a lane reading several words starts at a multiple of LOW: matrixWord(first + w) = its + matrixWord(w)
                d.keyWords0[w] = st.keyWords[offsets.keyWords0 + C::KeyPlane0::matrixWord(w, KB, 0) * (RUN / 4)];
            }
            if constexpr (C::KP == 2) d.keyWords1[0] = st.keyWords[offsets.keyWords1];
            const __half* scales = reinterpret_cast<const __half*>(st.keyMeta);
            uint32_t channels[C::KP * KCH / 2];
#pragma unroll
            for (int w = 0; w < C::KP * KCH / 2; w++) channels[w] = sh.keyChannels[lane][w];
#pragma unroll
            for (int pl = 0; pl < C::KP; pl++)
#pragma unroll
                for (int i = 0; i < KCH; i++) {
                    const uint32_t pair = channels[(pl * KCH + i) / 2];
                    d.keyScales[pl][i] = scales[i % 2 == 0 ? pair & 0xFFFFu : pair >> 16];
                }
            const uint32_t* mins = reinterpret_cast<const uint32_t*>(scales + D);
#pragma unroll
            for (int i = 0; i < D / 64; i++) d.keyMins[i] = mins[lane * (D / 64) + i];
        }
        if (src.valueMatrix != 0) {
#pragma unroll
            for (int pl = 0; pl < C::VP; pl++)
#pragma unroll
                for (int a = 0; a < D / 32; a++) d.valueWords[pl][a] = st.valueWords[offsets.valueWords[pl] + 8 * a];
            const __half* meta = reinterpret_cast<const __half*>(st.valueMeta);
#pragma unroll
            for (int grp = 0; grp < C::MAX_GROUPS; grp++) {
                if (grp < groups) {
#pragma unroll
                    for (int pl = 0; pl < C::VP; pl++) d.valueScales[pl][grp] = meta[grp * RUN + valueToken[pl]];
                    d.valueMins[grp] = meta[(C::MAX_GROUPS + grp) * RUN + valueToken[0]];
                }
            }
        }
    }

    // ---- scores --------------------------------------------------------------------------------------

    // Packed keys: right-hand sides for this unit's block (q * scale per channel), then the mma.
    template <int PL, typename Pairs, int WORDS>
    __device__ __forceinline__ void packedKeyPlane(const uint4 (&words)[WORDS], float (&c)[2][4]) const {
#pragma unroll
        for (int kp = 0; kp < D / 32; kp++) {
            typename Rhs::Fragments f;
            Rhs::load(sh.unitRows + PL * D + 32 * kp, UNIT_SET, f);
#pragma unroll
            for (int kk = 0; kk < 2; kk++) {
                const int kt = 2 * kp + kk;
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    uint32_t a[4];
#pragma unroll
                    for (int e = 0; e < 2; e++)
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            const int P = 2 * kt + e;
                            const uint4& w = words[Pairs::wordSlot(P / Pairs::PER_SHIFT)];
                            a[2 * e + h] = Pairs::pair(component(w, 2 * mt + h), j, P);
                        }
                    Rhs::mma(c[mt], a, f, kk);
                }
            }
        }
    }

    // c: the packed part of the scores; returns sum_c qn_c * min_c of the lane's softmax head
    __device__ float packedKeys(const Load& d, float (&c)[2][4]) const {
#pragma unroll
        for (int pl = 0; pl < C::KP; pl++) {
#pragma unroll
            for (int i = 0; i < KCH; i++) {
                const int r = pl * D + lane + 32 * i;
                const float scale = __half2float(d.keyScales[pl][i]);
                float x[GQ];
#pragma unroll
                for (int g = 0; g < GQ; g++) x[g] = sh.keyWeights[r][g] * scale;
                Rhs::store(sh.unitRows, UNIT_SET, r, x);
            }
        }
        // sum_c qn_c * min_c: this lane's channels (D / 32) * lane ..
        float partial[GQ];
#pragma unroll
        for (int g = 0; g < GQ; g++) {
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < D / 64; i++) {
                const float2 m = __half22float2(*reinterpret_cast<const __half2*>(&d.keyMins[i]));
                const int c0 = (D / 32) * lane + 2 * i;
                s = fmaf(sh.qn[g][c0], m.x, fmaf(sh.qn[g][c0 + 1], m.y, s));
            }
            partial[g] = s;
        }
        const float bias = warp_sum_scatter<GQ>(partial);
        __syncwarp();
        packedKeyPlane<0, typename C::KeyPlane0>(d.keyWords0, c);
        if constexpr (C::KP == 2) packedKeyPlane<1, typename C::KeyPlane1>(d.keyWords1, c);
        return bias;
    }

    // fp16 keys: rows 4 rho + 2 mt + h, lane j's channels j * D/4 .. + D/4 - 1.
    __device__ void fpKeys(const __half* rows, int start, bool isSink, float (&c)[2][4]) const {
        constexpr int VECTORS = D / 32;  // uint4 per lane and row
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            uint4 x[2][VECTORS];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int row = 4 * rho + 2 * mt + h;
                const bool present = !isSink || start + row < cache.sinks;
#pragma unroll
                for (int m = 0; m < VECTORS; m++) {
                    x[h][m] = present ? *reinterpret_cast<const uint4*>(rows + (size_t) row * D + j * (D / 4) + 8 * m)
                                      : make_uint4(0u, 0u, 0u, 0u);
                }
            }
#pragma unroll
            for (int kp = 0; kp < D / 32; kp++) {
                typename Rhs::Fragments f;
                Rhs::load(sh.fpKeyRows + 32 * kp, D, f);
#pragma unroll
                for (int kk = 0; kk < 2; kk++) {
                    const int kt = 2 * kp + kk;
                    uint32_t a[4];
#pragma unroll
                    for (int e = 0; e < 2; e++)
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            const int P = 2 * kt + e;
                            a[2 * e + h] = component(x[h][P / 4], P % 4);
                        }
                    Rhs::mma(c[mt], a, f, kk);
                }
            }
        }
    }

    // ---- one unit ------------------------------------------------------------------------------------

    __device__ void unit(int u, const UnitSources& src, const Load& d) {
        if ((src.keyMatrix | src.keyRows | src.valueMatrix | src.valueRows) == 0) return;
        const int start = v.unitStart(u, cache.sinks);
        const bool isSink = u < v.sinkUnits;

        // scores [token][head] into sh.p
        float packed[2][4], fp[2][4], headBias = 0.0f;
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int e = 0; e < 4; e++) packed[mt][e] = fp[mt][e] = 0.0f;
        if (src.keyMatrix != 0) headBias = packedKeys(d, packed);
        if (src.keyRows != 0) fpKeys(reinterpret_cast<const __half*>(src.keyRows), start, isSink, fp);
        // lane's columns: heads, their bias (packed keys) and score factor
        float columnBias[2], columnScale[2];
#pragma unroll
        for (int column = 0; column < 2; column++) {
            const int g = Rhs::columnHead(j, column);
            columnBias[column] = __shfl_sync(0xffffffffu, headBias, min(g, GQ - 1) * LANES_PER_HEAD);
            columnScale[column] = 0.0f;
#pragma unroll
            for (int x = 0; x < GQ; x++) {
                if (x == g) columnScale[column] = qScale[x];
            }
        }
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int row = 4 * rho + 2 * mt + h;
                const int t = start + row;
                const bool visible = src.plain || (t >= v.first && t <= v.last && (!isSink || t < cache.sinks));
                const bool fromRows = !src.plain && (isSink || t >= v.keyPackedEnd);
#pragma unroll
                for (int column = 0; column < 2; column++) {
                    const int g = Rhs::columnHead(j, column);
                    float score;
                    if (GQ == 8) {
                        score = fromRows ? fp[mt][2 * h + column]
                                         : fmaf(packed[mt][2 * h + column], TWO_POW_24, columnBias[column]);
                    } else {
                        score = fromRows ? fp[mt][2 * h] + fp[mt][2 * h + 1]
                                         : fmaf(packed[mt][2 * h] + packed[mt][2 * h + 1], TWO_POW_24, columnBias[column]);
                    }
                    if (Rhs::ownsHeads(j) && (GQ == 8 || column == 0)) {
                        sh.p[g][row] = visible ? score * columnScale[column] : NEG_INF;
                    }
                }
            }
        __syncwarp();

        // online softmax over the lane's GQ tokens of its head; alpha rescales what came before
        float* mine = &sh.p[lane / LANES_PER_HEAD][GQ * (lane % LANES_PER_HEAD)];
        float s[GQ];
        if constexpr (GQ % 4 == 0) {
#pragma unroll
            for (int i = 0; i < GQ; i += 4) *reinterpret_cast<float4*>(s + i) = *reinterpret_cast<const float4*>(mine + i);
        } else if constexpr (GQ == 2) {
            *reinterpret_cast<float2*>(s) = *reinterpret_cast<const float2*>(mine);
        } else {
            s[0] = mine[0];
        }
        float unitMax = s[0];
#pragma unroll
        for (int i = 1; i < GQ; i++) unitMax = fmaxf(unitMax, s[i]);
#pragma unroll
        for (int o = LANES_PER_HEAD / 2; o > 0; o >>= 1) unitMax = fmaxf(unitMax, __shfl_xor_sync(0xffffffffu, unitMax, o));
        const float newMax = fmaxf(headMax, unitMax);
        const float headAlpha = newMax == NEG_INF ? 1.0f : exp2f(headMax - newMax);
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < GQ; i++) {
            s[i] = s[i] == NEG_INF ? 0.0f : exp2f(s[i] - newMax);
            sum += s[i];
        }
        if constexpr (GQ % 4 == 0) {
#pragma unroll
            for (int i = 0; i < GQ; i += 4) *reinterpret_cast<float4*>(mine + i) = *reinterpret_cast<const float4*>(s + i);
        } else if constexpr (GQ == 2) {
            *reinterpret_cast<float2*>(mine) = *reinterpret_cast<const float2*>(s);
        } else {
            mine[0] = s[0];
        }
        headSum = fmaf(headSum, headAlpha, sum);
        headMax = newMax;
        const bool rescale = __any_sync(0xffffffffu, headAlpha != 1.0f);
        // value scale exponent Z: max scale of the unit * 2^Z within [2^4, 2^13) (headroom for the weight 4 of
        // a 3-bit high plane and for p <= 1), changed only when it leaves that range
        int shiftZ = 0;
        if (src.valueMatrix != 0) {
            float largest = 0.0f;
#pragma unroll
            for (int pl = 0; pl < C::VP; pl++)
#pragma unroll
                for (int grp = 0; grp < C::MAX_GROUPS; grp++)
                    if (grp < groups) largest = fmaxf(largest, __half2float(d.valueScales[pl][grp]));
            // the unit's largest scale * 2^Z still within [2^4, 2^13): nothing to do (two votes, no shuffles)
            const bool inRange = haveValueExp && !__any_sync(0xffffffffu, largest * kvmix::pow2(valueExp) >= 8192.0f)
                    && __any_sync(0xffffffffu, largest * kvmix::pow2(valueExp) >= 16.0f);
            if (!inRange) largest = warp_max(largest);
            if (!inRange && largest > 0.0f) {
                int e;
                frexpf(largest, &e);  // largest in [2^(e-1), 2^e)
                const int lowest = 5 - e, highest = 13 - e;  // largest * 2^Z in [2^4, 2^13)
                if (!haveValueExp || valueExp < lowest || valueExp > highest) {
                    const int z = highest;
                    shiftZ = haveValueExp ? z - valueExp : z - 24;
                    valueExp = z;
                    haveValueExp = true;
                }
            }
        }
        if (rescale || shiftZ != 0) {
            const float z = kvmix::pow2(shiftZ);
            float alpha[GQ];  // of every head, from a lane that serves it
#pragma unroll
            for (int g = 0; g < GQ; g++) alpha[g] = __shfl_sync(0xffffffffu, headAlpha, g * LANES_PER_HEAD);
#pragma unroll
            for (int column = 0; column < 2; column++) {
                const int g = Rhs::columnHead(j, column);
                float f = 1.0f;
#pragma unroll
                for (int x = 0; x < GQ; x++)
                    if (x == g) f = alpha[x];
                f *= z;
#pragma unroll
                for (int mt = 0; mt < D / 16; mt++) {
                    if (GQ == 8) {
                        acc[mt][column] *= f;
                        acc[mt][2 + column] *= f;
                    } else if (column == 0) {
                        acc[mt][0] *= f;
                        acc[mt][1] *= f;
                        acc[mt][2] *= f;
                        acc[mt][3] *= f;
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < GQ; g++)
#pragma unroll
                for (int grp = 0; grp < C::MAX_GROUPS; grp++) minSum[g][grp] *= alpha[g];
        }
        __syncwarp();

        // right-hand sides of the values: p * scale (packed, per plane and group) and p (fp16 rows)
        if (src.valueMatrix != 0) {
            // every token once: the token of the lane's plane-0 k-row
            const bool live = src.plain || start + valueToken[0] < v.valuePackedEnd;
#pragma unroll
            for (int grp = 0; grp < C::MAX_GROUPS; grp++) {
                if (grp < groups) {
                    const float mn = live ? __half2float(d.valueMins[grp]) : 0.0f;
#pragma unroll
                    for (int g = 0; g < GQ; g++) minSum[g][grp] = fmaf(sh.p[g][valueToken[0]], mn, minSum[g][grp]);
                }
            }
#pragma unroll
            for (int pl = 0; pl < C::VP; pl++) {
                const int token = valueToken[pl];
                const bool tokenLive = src.plain || start + token < v.valuePackedEnd;
                const float weight = kvmix::pow2(valueExp - valueExponent[pl]);
                float pt[GQ];
#pragma unroll
                for (int g = 0; g < GQ; g++) pt[g] = sh.p[g][token] * weight;
#pragma unroll
                for (int grp = 0; grp < C::MAX_GROUPS; grp++) {
                    if (grp < groups) {
                        const float scale = __half2float(d.valueScales[pl][grp]);
                        float x[GQ];
#pragma unroll
                        for (int g = 0; g < GQ; g++) x[g] = tokenLive ? pt[g] * scale : 0.0f;
                        Rhs::store(sh.unitRows, UNIT_SET, (pl * C::MAX_GROUPS + grp) * RUN + lane, x);
                    }
                }
            }
        }
        if (src.valueRows != 0) {
            const int t = start + fpValueToken;
            const bool fromRows = isSink ? t < cache.sinks : t >= v.valuePackedEnd;
            float x[GQ];
#pragma unroll
            for (int g = 0; g < GQ; g++) x[g] = fromRows ? sh.p[g][fpValueToken] : 0.0f;
            Rhs::store(sh.unitRows, UNIT_SET, C::VALUE_FP_ROW + lane, x);
        }
        __syncwarp();
        if (src.valueMatrix != 0) {
            packedValuePlane<0, typename C::ValuePlane0>(d.valueWords[0]);
            if constexpr (C::VP == 2) packedValuePlane<1, typename C::ValuePlane1>(d.valueWords[C::VP - 1]);
        }
        if (src.valueRows != 0) fpValues(reinterpret_cast<const __half*>(src.valueRows), start, isSink);
        __syncwarp();
    }

    template <int PL, typename Pairs>
    __device__ __forceinline__ void packedValuePlane(const uint4 (&words)[D / 32]) {
#pragma unroll
        for (int a = 0; a < D / 32; a++) {
            const int grp = 32 * a / groupLength;
            typename Rhs::Fragments f;
            Rhs::load(sh.unitRows + (PL * C::MAX_GROUPS + grp) * RUN, UNIT_SET, f);
#pragma unroll
            for (int m2 = 0; m2 < 2; m2++)
#pragma unroll
                for (int kt = 0; kt < 2; kt++) {
                    uint32_t x[4];
#pragma unroll
                    for (int e = 0; e < 2; e++)
#pragma unroll
                        for (int h = 0; h < 2; h++) x[2 * e + h] = Pairs::pair(component(words[a], 2 * m2 + h), j, 2 * kt + e);
                    Rhs::mma(acc[2 * a + m2], x, f, kt);
                }
        }
    }

    // fp16 values: lane j's pairs are tokens (8j + 2P, 8j + 2P + 1), rows channels 32a + 4 rho + {0..3}.
    // Rows of tokens that do not come from here are zeros (their memory may hold anything).
    __device__ void fpValues(const __half* rows, int start, bool isSink) {
        typename Rhs::Fragments f;
        Rhs::load(sh.unitRows + C::VALUE_FP_ROW, UNIT_SET, f);
        const float toAcc = kvmix::pow2(valueExp - 24);
#pragma unroll
        for (int a = 0; a < D / 32; a++) {
            uint2 x[8];
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int row = 8 * j + i;
                const int t = start + row;
                const bool use = t >= v.first && t <= v.last && (isSink ? t < cache.sinks : t >= v.valuePackedEnd);
                x[i] = use ? *reinterpret_cast<const uint2*>(rows + (size_t) row * D + 32 * a + 4 * rho) : make_uint2(0u, 0u);
            }
#pragma unroll
            for (int m2 = 0; m2 < 2; m2++) {
                float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int kt = 0; kt < 2; kt++) {
                    uint32_t y[4];
#pragma unroll
                    for (int e = 0; e < 2; e++)
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            const int P = 2 * kt + e;
                            const int channel = 2 * m2 + h;  // of the 4 loaded
                            const uint32_t lo = channel < 2 ? x[2 * P].x : x[2 * P].y;
                            const uint32_t hi = channel < 2 ? x[2 * P + 1].x : x[2 * P + 1].y;
                            y[2 * e + h] = __byte_perm(lo, hi, channel % 2 == 0 ? 0x5410 : 0x7632);
                        }
                    Rhs::mma(c, y, f, kt);
                }
#pragma unroll
                for (int e = 0; e < 4; e++) acc[2 * a + m2][e] = fmaf(c[e], toAcc, acc[2 * a + m2][e]);
            }
        }
    }

    // ---- the split -----------------------------------------------------------------------------------

    __device__ void run() {
#pragma unroll
        for (int u = 0; u < STAGES - 1; u++) {
            if (u < v.unitCount) issue(u, sh.stages[u]);
            commit_async();
        }
        int stage = 0;  // unit u's stage, u % STAGES
        for (int u = 0; u < v.unitCount; u++) {
            const int ahead = u + STAGES - 1;  // its stage held unit u - 1, finished
            if (ahead < v.unitCount) issue(ahead, sh.stages[stage == 0 ? STAGES - 1 : stage - 1]);
            commit_async();
            wait_async<STAGES - 1>();  // this lane's copies of unit u have landed
            __syncwarp();               // and every lane's
            Load d;
            const UnitSources src = sources[u];
            fetch(src, sh.stages[stage], d);
            unit(u, src, d);
            stage = stage == STAGES - 1 ? 0 : stage + 1;
        }
    }

    // Partial output [seq][queryHead][split][D] (true sums: acc * 2^(24 - Z) plus the min terms) and (max, sum).
    __device__ void write(int seq, int head, int split, int splits, float* partialAcc, float* partialStats) {
        const int queryHeads = cache.kvHeads * GQ;
        float minTotal[GQ][C::MAX_GROUPS];
#pragma unroll
        for (int g = 0; g < GQ; g++)
#pragma unroll
            for (int grp = 0; grp < C::MAX_GROUPS; grp++) minTotal[g][grp] = grp < groups ? warp_sum(minSum[g][grp]) : 0.0f;
        const float fromAcc = kvmix::pow2(24 - valueExp);
#pragma unroll
        for (int column = 0; column < 2; column++) {
            const int g = Rhs::columnHead(j, column);
            if (!Rhs::ownsHeads(j) || (GQ != 8 && column == 1)) continue;
            const size_t row = (size_t) seq * queryHeads + head * GQ + g;
            float* out = partialAcc + (row * splits + split) * D;
#pragma unroll
            for (int mt = 0; mt < D / 16; mt++) {
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int channel = 32 * (mt / 2) + 4 * rho + 2 * (mt % 2) + h;
                    const float sum = GQ == 8 ? acc[mt][2 * h + column] : acc[mt][2 * h] + acc[mt][2 * h + 1];
                    float mins = 0.0f;
#pragma unroll
                    for (int x = 0; x < GQ; x++)
#pragma unroll
                        for (int grp = 0; grp < C::MAX_GROUPS; grp++)
                            if (x == g && grp == channel / groupLength) mins = minTotal[x][grp];
                    out[channel] = fmaf(sum, fromAcc, mins);
                }
            }
        }
        float total = headSum;
#pragma unroll
        for (int o = LANES_PER_HEAD / 2; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
        if (lane % LANES_PER_HEAD == 0) {
            const size_t row = (size_t) seq * queryHeads + head * GQ + lane / LANES_PER_HEAD;
            partialStats[(row * splits + split) * 2] = headMax;
            partialStats[(row * splits + split) * 2 + 1] = total;
        }
    }
};

template <int D, int GQ, int KB, int VB>
__device__ void attend_split(const CacheParams* __restrict__ cacheParams, const int* __restrict__ sequenceState,
                             const void* __restrict__ query, int queryHalf, float softmaxScale, int splitUnits,
                             int fpSplitUnits, int packedSplits, float* __restrict__ partialAcc,
                             float* __restrict__ partialStats) {
    __shared__ __align__(16) Shared<D, GQ, KB, VB> sh;
    extern __shared__ __align__(16) unsigned char dynamicShared[];
    const CacheParams cache = *cacheParams;
    const int head = blockIdx.x;
    const int seq = blockIdx.y;
    const int splits = gridDim.z;
    const int split = splits - 1 - blockIdx.z;
    const int lane = threadIdx.x % LANES;

    SplitView v;
    v.length = sequenceState[seq * 3];
    v.keyPackedEnd = sequenceState[seq * 3 + 1];
    v.valuePackedEnd = sequenceState[seq * 3 + 2];
    v.last = v.length - 1;
    v.first = cache.window > 0 ? max(0, v.last - cache.window + 1) : 0;
    v.sinkUnits = split == 0 ? (cache.sinks + RUN - 1) / RUN : 0;
    // DeviceBatchKvCache.attendDevice counts the splits the same way
    const int fpUnit = max(0, min(v.keyPackedEnd, v.valuePackedEnd) - cache.sinks) / RUN;
    const int units = (max(0, v.length - cache.sinks) + RUN - 1) / RUN;
    const int runEnd = split < packedSplits ? fpUnit : units;
    const int runUnits = split < packedSplits ? splitUnits : fpSplitUnits;
    v.firstUnit = split < packedSplits ? split * splitUnits : fpUnit + (split - packedSplits) * fpSplitUnits;
    v.unitCount = v.sinkUnits + max(0, min(runUnits, runEnd - v.firstUnit));
    UnitSources* sources = reinterpret_cast<UnitSources*>(dynamicShared);  // [unitCount]

    // Where each unit's tokens live: one table lookup per unit, done once for the CTA.
    for (int u = lane; u < v.unitCount; u += LANES) {
        const int start = v.unitStart(u, cache.sinks);
        UnitSources src = {0, 0, 0, 0, 0, 0, {0, 0}};
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
                src.inBlock = inBlock;
                src.plain = start >= v.first && start + RUN - 1 <= v.last && start + RUN <= v.keyPackedEnd
                        && start + RUN <= v.valuePackedEnd;
                if (start < v.keyPackedEnd) src.keyMatrix = cache.keys.blocks[slot] + head * cache.keys.headStride;
                if (start + RUN > v.keyPackedEnd) src.keyRows = cache.keys.chunks[slot] + row;
                if (start < v.valuePackedEnd) src.valueMatrix = cache.values.blocks[slot] + head * cache.values.headStride;
                if (start + RUN > v.valuePackedEnd) src.valueRows = cache.values.chunks[slot] + row;
            }
        }
        sources[u] = src;
    }
    __syncwarp();

    Attention<D, GQ, KB, VB> attention(sh, cache, v, sources);
    const int queryHeads = cache.kvHeads * GQ;
    attention.prepare(query, queryHalf != 0, ((size_t) seq * queryHeads + head * GQ) * D, softmaxScale);
    attention.run();
    attention.write(seq, head, split, splits, partialAcc, partialStats);
}

}  // namespace

// One module per kernel: scripts/build-ptx.sh compiles this file once per (D, GQ, KB, VB) with
// -DKVMIX_ATTEND_D=.. -DKVMIX_ATTEND_GQ=.. -DKVMIX_ATTEND_KB=.. -DKVMIX_ATTEND_VB=.. (a PTX module of every
// instance would take the driver over a minute to JIT at load), and once without them for the combine kernel.
#ifdef KVMIX_ATTEND_D
// cache:          CacheParams (written once per cache)
// sequenceState:  [batch][3] = length, keys' packedEnd, values' packedEnd
// query:          [batch][kvHeads * GQ][D], fp16 if queryHalf else fp32
// partialAcc:     [batch][queryHeads][splits][D] fp32;  partialStats: [batch][queryHeads][splits][2] (max, sum; log2)
// grid:           (kvHeads, batch, splits), one warp; dynamic shared: UNIT_SOURCES_BYTES per unit of the longest split
// CTAs per multiprocessor the register allocation must leave room for: 12 (168 registers) where ptxas -v shows
// that costs no spills (one query head per KV head, no 3-bit stream), else whatever the kernel needs. More
// resident warps hide more of each unit's dependency chain: 2-bit at 12 instead of 11 CTAs ran about 20% faster.
constexpr int min_resident_ctas(int gq, int kb, int vb) { return gq == 1 && kb != 3 && vb != 3 ? 12 : 1; }
#define KVMIX_ATTEND_NAME(D, GQ, KB, VB) kvmix_attend_d##D##_g##GQ##_k##KB##v##VB
#define KVMIX_ATTEND(D, GQ, KB, VB)                                                                          \
    extern "C" __global__ void __launch_bounds__(LANES, min_resident_ctas(GQ, KB, VB))                       \
    KVMIX_ATTEND_NAME(D, GQ, KB, VB)(                                                                        \
            const CacheParams* cache, const int* sequenceState, const void* query, int queryHalf,           \
            float softmaxScale, int splitUnits, int fpSplitUnits, int packedSplits, float* partialAcc,      \
            float* partialStats) {                                                                           \
        attend_split<D, GQ, KB, VB>(cache, sequenceState, query, queryHalf, softmaxScale, splitUnits,       \
                                    fpSplitUnits, packedSplits, partialAcc, partialStats);                   \
    }
KVMIX_ATTEND(KVMIX_ATTEND_D, KVMIX_ATTEND_GQ, KVMIX_ATTEND_KB, KVMIX_ATTEND_VB)
#else
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
        const float w = exp2f(ms - m);
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
#endif
