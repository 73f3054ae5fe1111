// Fused decode attention over the device KV cache, flash-decoding style, the packed codes on the tensor cores.
//
// Each sequence of the batch has one query token (its newest position). kvmix_attend_d<D>_g<GQ>
// splits every sequence's history after the sinks into units of 32 tokens and gives split s the units
// s, s + splits, s + 2 splits, .. (at most splitUnits of them; split 0 also takes the sinks); grid (splits,
// kvHeads * tiles, batch), one CTA of 4 warps per (split, KV head, tile, sequence) serving up to GQ of the
// `group` query heads that share that KV head: tile t takes heads t GQ .. (tiles = ceil(group / GQ); with
// group < GQ the missing heads are zero queries whose outputs are dropped, e.g. 3 heads on the GQ 4 kernel).
// Taking every splits-th unit spreads the FP window (the newest tokens, fp16 rows, about 8x the bytes of a
// 2-bit unit) over all splits instead of loading the last one.
// A CTA scores its tokens (packed keys, FP keys from fp16 rows), takes a local softmax and sums the values
// (packed or FP) weighted by it, and writes the unnormalised partial output with its max and sum.
// kvmix_attend_combine merges the splits of each (sequence, query head).
//
// Tokens of one sequence and stream (FORMAT.md section 4), S sinks, G group size:
//   [0, S)                 sink rows          sinks[batch][kvHeads][S][D] fp16
//   [S, packedEnd)         packed blocks      block j (tokens S + j*G ..): blockTable[seq][j] + head * headStride
//   [packedEnd, length)    FP rows            chunk j: fpTable[seq][j], rows [kvHeads][G][D] fp16
// packedEnd is per stream (keys and values may differ) and never above the last append's first token:
// that step's own tokens are read in full precision, as on the CPU.
//
// The work unit is 32 consecutive tokens, one run of a packed matrix; each warp takes every 4th unit, and
// cp.async copies the packed slices of its next unit into shared memory while it computes the current one
// (fp16 rows are asked into L2 a unit ahead). Packed units are two m16n8k16 fp16 mma products with
// fp32 accumulation, the left-hand sides cut straight from the packed words:
//   scores  [32 tokens][heads]    = codes [tokens][channels] x (q * scale)  [channels][heads]
//   outputs [D channels][heads]  += codes [channels][tokens] x (p * scale)  [tokens][heads]
// One AND cuts two codes out of a (shifted) word into the two halves of a register, where they read as fp16
// subnormals code * 2^(exponent - 24), exact (PlanePairs); the right-hand side carries 2^-exponent. The k
// order of a product is the order those pairs come in; the right-hand sides are written in that order into
// shared memory and read back with ldmatrix. A right-hand value v goes in as fp16 hi = fp16(v) and
// lo = fp16(v - hi) (RhsLayout), about 22 bits of v, so the products match fp32 arithmetic to ~1e-6.
// The fp16 key rows of regular units (the FP window) are a third product, the rows as they lie times q
// (fp_key_unit); sink keys and all fp16 value rows are read one token (keys) or CPL channels (values) per
// lane in fp32 arithmetic. What a warp has to do for each unit is decided once per CTA (UnitSources::flags).
#include <cuda_fp16.h>
#include <type_traits>
#include "kvmix_format.cuh"

namespace {

using kvmix::RUN;
constexpr int WARPS = 4;
constexpr int THREADS = WARPS * 32;
constexpr int LANES = 32;
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
    int flags;                       // UnitFlags: what a warp has to do for the unit, decided once per CTA
    int reserved[2];
};
static_assert(sizeof(UnitSources) == 48, "UnitSources layout");

// UnitSources::flags.
enum UnitFlags : int {
    KEYS_PACKED = 1,     // keyMatrix != 0
    KEYS_ROWS = 2,       // a regular unit with fp16 key rows (keyRows != 0): scored on the tensor cores after
                         // the packed part
    KEYS_PER_TOKEN = 4,  // a sink unit with rows, or a unit with no keys to read (scores -inf): one token per lane
    VALUES_PACKED = 8,   // valueMatrix != 0
    VALUES_ROWS = 16,    // valueRows != 0
    ALL_VISIBLE = 32,    // every token of the unit lies in the visible range
};

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

// Sums GQ values over the warp and leaves lane l the total of value l / (32 / GQ): halving exchanges (offsets
// 16, 8, .. keep the lane's half of the values), then full sums within each value's lanes.
template <int GQ>
__device__ __forceinline__ float warp_sum_scatter(float (&v)[GQ]) {
    const int lane = threadIdx.x % LANES;
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

// Pins per-lane values (offsets fixed for a CTA) in registers for the unit loops: ptxas otherwise recomputes
// them from the lane index in every unit to save registers (some 40 of the key pass's ~300 instructions per
// unit, measured on 22f941c).
__device__ __forceinline__ void pin_one(int& value) { asm volatile("" : "+r"(value)); }
template <typename... T>
__device__ __forceinline__ void pin(T&... values) {
    (pin_one(values), ...);
}

// The lane index, read from the hardware each time (volatile: not kept in a register across code between reads).
__device__ __forceinline__ int lane_id() {
    int lane;
    asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
    return lane;
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

// Right-hand-side rows: one k-row holds a value per head, split into fp16 hi and lo parts. With up to 4
// heads a row is [hi0, lo0, hi1, lo1, ...] (column 2g + part; unused columns zero) and one set of rows
// exists; with 8 heads set 0 holds the hi parts and set 1 (setStride rows further) the lo parts.
template <int GQ>
struct RhsLayout {
    static constexpr int SETS = GQ == 8 ? 2 : 1;

    // fp16(a) in the low half, fp16(b) in the high half: one conversion instruction for both.
    __device__ __forceinline__ static uint32_t pack2(float a, float b) {
        const __half2 h = __floats2half2_rn(a, b);
        return *reinterpret_cast<const uint32_t*>(&h);
    }
    // x - fp16(x): what the hi part leaves, stored as fp16 lo.
    __device__ __forceinline__ static float below(float x) { return x - __half2float(__float2half_rn(x)); }

    // Writes row `row` whole (columns past the heads zero).
    __device__ __forceinline__ static void store(uint4* rows, int setStride, int row, const float (&v)[GQ]) {
        if constexpr (GQ == 8) {
            uint32_t hi[4], lo[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                hi[e] = pack2(v[2 * e], v[2 * e + 1]);
                lo[e] = pack2(below(v[2 * e]), below(v[2 * e + 1]));
            }
            rows[row] = make_uint4(hi[0], hi[1], hi[2], hi[3]);
            rows[setStride + row] = make_uint4(lo[0], lo[1], lo[2], lo[3]);
        } else {
            uint32_t w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
            for (int g = 0; g < GQ; g++) w[g] = pack2(v[g], below(v[g]));
            rows[row] = make_uint4(w[0], w[1], w[2], w[3]);
        }
    }
    // Writes the heads' columns of row `row` only: its other columns must be zero already (the warps' rows
    // are cleared once per CTA, see clear_rows). One 4- or 8-byte store with 1 or 2 heads.
    __device__ __forceinline__ static void store_heads(uint4* rows, int setStride, int row, const float (&v)[GQ]) {
        if constexpr (GQ == 1) {
            *reinterpret_cast<uint32_t*>(rows + row) = pack2(v[0], below(v[0]));
        } else if constexpr (GQ == 2) {
            *reinterpret_cast<uint2*>(rows + row) = make_uint2(pack2(v[0], below(v[0])), pack2(v[1], below(v[1])));
        } else {
            store(rows, setStride, row, v);
        }
    }
    // Zeroes a warp's rows (the columns store_heads leaves alone); every lane of the warp calls it.
    __device__ __forceinline__ static void clear_rows(uint4* rows, int count) {
        if constexpr (GQ < 4) {
            for (int i = threadIdx.x % 32; i < count; i += 32) rows[i] = make_uint4(0u, 0u, 0u, 0u);
        }
    }

    // The b fragments of one pair of k-tiles (32 rows), and c += a x (k-tile kk of them).
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

    // Head of accumulator column 2j + column of lane j = lane % 4 (c[0]/c[2]: column 0, c[1]/c[3]: column 1).
    // With up to 4 heads both columns are head j (its hi and lo parts; j >= GQ: nothing); with 8, heads 2j, 2j + 1.
    __device__ __forceinline__ static int columnHead(int j, int column) { return GQ == 8 ? 2 * j + column : j; }
    __device__ __forceinline__ static bool ownsHeads(int j) { return GQ == 8 || j < GQ; }
    // Head g's value of accumulator row half h (0: c[0..1], 1: c[2..3]) at the lane's column `column`.
    __device__ __forceinline__ static float value(const float (&c)[4], int h, int column) {
        return GQ == 8 ? c[2 * h + column] : c[2 * h] + c[2 * h + 1];
    }
};

// A k-row r (0 .. 31 within a pair of k-tiles) names lane j's pair P (of the pair's 4 per lane) and half h:
// the b-fragment layout of ldmatrix.trans and the a-fragment slots (2j, 2j + 1) and (2j + 8, 2j + 9).
struct KRow {
    int j, P, h;
    __host__ __device__ constexpr explicit KRow(int r)
        : j((r % 16 % 8) / 2), P(2 * (r / 16) + r % 16 / 8), h(r % 2) {}
};

// How the codes of one bit plane feed the mma. A "row" is one lane-axis element of a packed matrix (a token
// for keys, a channel for values) with PACK codes along the pack axis (keys: D channels; values: the unit's
// 32 tokens). The four lanes sharing an mma row (j = lane % 4) split the row's plane words: lane j takes
// pairs j * PER_LANE .. + PER_LANE - 1, pair p being the codes at bits b and 16 + b of a word,
// b = 8 * view + WIDTH * q. After a right shift by the shift-unit's start, pair i of the unit sits at bits
// WIDTH * i and 16 + WIDTH * i: one AND gives both, as fp16 subnormals. Lane pair P feeds k-tile P / 2.
template <int BITS, int PLANE, int PACK>
struct PlanePairs {
    using Run = kvmix::RunLayout<BITS>;
    static constexpr int WIDTH = Run::planeWidth(PLANE);
    static constexpr int PER_WORD = 16 / WIDTH;
    static constexpr int PER_VIEW = 8 / WIDTH;
    static constexpr int PER_LANE = PACK / 8;
    static constexpr int PER_SHIFT = PER_LANE < PER_VIEW ? PER_LANE : PER_VIEW;  // pairs cut from one shifted word
    static constexpr int WORDS = PER_LANE > PER_WORD ? PER_LANE / PER_WORD : 1;  // words per row and lane

    __host__ __device__ static constexpr int firstWord(int j) { return j * PER_LANE / PER_WORD; }
    // The lane's word (from its first) that shift-unit k reads.
    __device__ __forceinline__ static constexpr int wordSlot(int k) { return k * PER_SHIFT / PER_WORD; }
    __device__ __forceinline__ static int shift(int j, int k) {
        const int p = j * PER_LANE + k * PER_SHIFT;
        return 8 * ((p % PER_WORD) / PER_VIEW) + WIDTH * (p % PER_VIEW);
    }
    __device__ __forceinline__ static constexpr uint32_t mask(int i) {
        return (((1u << WIDTH) - 1u) * 0x00010001u) << (WIDTH * i);
    }
    // The two codes of lane j's pair P, as fp16 subnormals code * 2^(exponent(P) - 24).
    __device__ __forceinline__ static uint32_t pair(uint32_t word, int j, int P) {
        return (word >> shift(j, P / PER_SHIFT)) & mask(P % PER_SHIFT);
    }
    // Exponent of lane pair P, minus this plane's code bit (the 3-bit high plane weighs 4): the right-hand
    // side of the pair is multiplied by 2^-weightExponent(P).
    __device__ __forceinline__ static constexpr int weightExponent(int P) {
        return WIDTH * (P % PER_SHIFT) - Run::planeShift(PLANE);
    }
    // Pack-axis index of the code in half h (0: low) of lane j's pair P.
    __host__ __device__ static constexpr int packIndex(int j, int P, int h) {
        const int p = j * PER_LANE + P;
        return Run::codeAt(PLANE, p / PER_WORD, 8 * ((p % PER_WORD) / PER_VIEW) + WIDTH * (p % PER_VIEW) + 16 * h);
    }
    // Index among a row's words of the lane's w-th plane word of run `run` (values: the unit's run).
    __host__ __device__ static constexpr int rowWord(int j, int w, int run) {
        constexpr int PLANE_WORDS = PLANE == 0 ? Run::LOW : 1;  // plane words per run
        return Run::rowWord(PLANE, run * PLANE_WORDS + firstWord(j) + w);
    }
};

// Value groups per token at most: the group length min(G, D) is at least 32 channels.
__host__ __device__ constexpr int max_value_groups(int d) { return d / 32; }

// Bytes per channel of a CTA's right-hand sides of fp16 key rows (FpKeyRows), sized for two sets (8 query heads).
constexpr int FP_KEY_ROW_BYTES = 2 * 16;

template <int D, int GQ>
struct Layout {
    static constexpr int CPL = D / 32;     // channels per lane in the fp16-row value sums
    static constexpr int MAX_GROUPS = max_value_groups(D);
    static constexpr int SETS = RhsLayout<GQ>::SETS;
    // per-warp right-hand-side rows (one set): keys 2 planes x D channels, values 2 planes x groups x 32 tokens
    static constexpr int KEY_ROWS = 2 * D;
    static constexpr int VALUE_ROWS = 2 * MAX_GROUPS * RUN;
    static constexpr int ROWS = KEY_ROWS > VALUE_ROWS ? KEY_ROWS : VALUE_ROWS;
    static_assert(SETS * ROWS * 4 >= GQ * D, "a warp's rows hold its partial output [GQ][D] at the end");
    static_assert(SETS * 16 <= FP_KEY_ROW_BYTES, "the fp16 key rows' right-hand sides fit their shared memory");
};

template <int D, int GQ>
struct Shared {
    using L = Layout<D, GQ>;
    uint4 rows[WARPS][L::SETS * L::ROWS];  // per warp: this unit's right-hand sides; at the end its output
    float q[GQ][D];
    float keyWeights[2 * D][GQ];  // key k-row r of plane r / D: q of its channel * 2^-(E + weightExponent)
    float qFactor[GQ];            // 2^(24 + E) of each head: packed-key products back to q . k
    float scoreFactor[GQ];        // qFactor * softmaxScale
    float reduction[WARPS][GQ];
    float rowMax[GQ];
    float rowSum[GQ];
};

// What one CTA knows about its sequence, head and split.
struct SplitView {
    int length, keyPackedEnd, valuePackedEnd;
    int first, last;        // visible tokens [first, last]
    int sinkUnits, unitCount;
    int split, splits;      // this CTA's regular units are split, split + splits, ..

    __device__ __forceinline__ int unitStart(int u, int sinks) const {
        return u < sinkUnits ? u * RUN : sinks + (split + (u - sinkUnits) * splits) * RUN;
    }
};

// Asks L2 for the fp16 rows of one unit (RUN rows of D channels, contiguous in an FP chunk), one 128-byte
// line per lane and step, so that the row reads of the unit's turn find them there.
template <int D>
__device__ __forceinline__ void prefetch_unit_rows(unsigned long long rows) {
    constexpr int LINE = 128;
    constexpr int BYTES = RUN * D * (int) sizeof(__half);
#pragma unroll
    for (int at = (threadIdx.x % LANES) * LINE; at < BYTES; at += LANES * LINE) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(rows + at));
    }
}

// Dot products of the GQ queries with one fp16 row of D channels.
template <int D, int GQ>
__device__ __forceinline__ void fp_key_dots(const __half* row, const float* q, float (&dot)[GQ]) {
#pragma unroll 8
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

// Adds sum_t p_t * row_t over `count` consecutive fp16 rows of D channels (this lane's CPL channels), a batch
// of rows' loads in flight before their sums.
template <int D, int GQ>
__device__ __forceinline__ void fp_value_sums(const __half* rows, int count, const float* p, int pStride,
                                              float (&acc)[GQ][D / 32]) {
    constexpr int CPL = D / 32;
    constexpr int BATCH = GQ >= 4 ? 4 : 8;
    using Raw = typename std::conditional<CPL == 4, uint2, uint32_t>::type;  // CPL fp16 values (D = 128 or 64)
    static_assert(CPL == 4 || CPL == 2, "head_dim 64 or 128");
    const int lane = threadIdx.x % 32;
    for (int first = 0; first < count; first += BATCH) {
        Raw raw[BATCH];
#pragma unroll
        for (int i = 0; i < BATCH; i++) {
            raw[i] = first + i < count ? *reinterpret_cast<const Raw*>(rows + (size_t) (first + i) * D + lane * CPL) : Raw{};
        }
#pragma unroll
        for (int i = 0; i < BATCH; i++) {
            if (first + i >= count) break;
            float x[CPL];
            if constexpr (CPL == 4) {
                const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&raw[i].x));
                const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&raw[i].y));
                x[0] = a.x; x[1] = a.y; x[2] = b.x; x[3] = b.y;
            } else {
                const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&raw[i]));
                x[0] = a.x; x[1] = a.y;
            }
#pragma unroll
            for (int g = 0; g < GQ; g++) {
                const float pg = p[g * pStride + first + i];
#pragma unroll
                for (int cc = 0; cc < CPL; cc++) acc[g][cc] = fmaf(pg, x[cc], acc[g][cc]);
            }
        }
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

// 16 bytes from global to shared memory without passing through registers, and the group bookkeeping.
__device__ __forceinline__ void copy_async(uint4* to, unsigned long long from) {
    const unsigned at = static_cast<unsigned>(__cvta_generic_to_shared(to));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(at), "l"(from) : "memory");
}
__device__ __forceinline__ void commit_async() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most `pending` of this lane's committed groups are in flight.
template <int PENDING>
__device__ __forceinline__ void wait_async() { asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory"); }

// A warp's stages: the packed slices of its next unit are copied into one while it computes the other.
constexpr int STAGES = 2;
// Bytes of one stage: a unit's words at 4 bits (16 D) and its metadata (keys: scales and mins of D channels,
// values: scales and mins of 32 tokens in up to D / 32 groups).
constexpr int STAGE_BYTES_PER_CHANNEL = 20;
__host__ __device__ constexpr int stage_bytes(int d) { return STAGE_BYTES_PER_CHANNEL * d; }

// Starts copying the packed slice of the warp's unit u (keys or values, if it has one) into a stage, asks L2
// for the unit's fp16 rows (regular units only: whole chunk rows; a sink unit may hold fewer than RUN rows)
// and commits the copies as one group (an empty one past the last unit, so that the wait counts stay fixed).
template <typename Unit, bool KEYS, int D>
__device__ __forceinline__ void copy_unit_ahead(const SplitView& v, const UnitSources* sources, int u, uint4* stage,
                                                const typename Unit::CopyPlan& plan) {
    if (u < v.unitCount) {
        const UnitSources next = sources[u];
        const unsigned long long matrix = KEYS ? next.keyMatrix : next.valueMatrix;
        const unsigned long long rows = KEYS ? next.keyRows : next.valueRows;
        if ((next.flags & (KEYS ? KEYS_PACKED : VALUES_PACKED)) != 0) Unit::issue(stage, matrix, next.inBlock, plan);
        if (u >= v.sinkUnits && rows != 0) prefetch_unit_rows<D>(rows);
    }
    commit_async();
}

// Where a 16-byte chunk of packed words lies in its 128-byte line of a stage. Lane (rho, j) of an mma fragment
// reads chunk rho of a line that depends on j; the 8 lanes of a quarter-warp (rho = 2q, 2q + 1, j = 0..3) are
// served in one shared-memory cycle only if their chunks lie in distinct bank groups, so chunk `position` of a
// line read by lanes j is stored at position ^ 2 j (without it the four j of a quarter-warp hit the same banks).
__host__ __device__ constexpr int swizzled(int position, int readerJ) { return position ^ (2 * readerJ); }

// The j of the lanes that read word w of a packed row (keys: a token's row words; values: the unit's run), the
// first where lanes share a word; Low and High are the PlanePairs of the width's planes.
template <typename Low, typename High, int PLANES>
__host__ __device__ constexpr int first_reader(int w) {
    for (int j = 0; j < 4; j++) {
        for (int i = 0; i < Low::WORDS; i++)
            if (Low::rowWord(j, i, 0) == w) return j;
        if (PLANES == 2 && High::rowWord(j, 0, 0) == w) return j;
    }
    return 0;
}

// ---- keys -----------------------------------------------------------------------------------------------

// The lane's part of one unit's packed keys: lane axis = G tokens, pack axis = D channels, one (scale, min)
// per channel for the block. Lane (rho, j) = (lane / 4, lane % 4) reads tokens 4 rho .. 4 rho + 3 of the
// unit (mma rows: m-tile mt, row half h is token 4 rho + 2 mt + h) and its pairs' words of each plane.
template <int BITS, int D>
struct KeyUnit {
    using Run = kvmix::RunLayout<BITS>;
    using Low = PlanePairs<BITS, 0, D>;
    using High = PlanePairs<BITS, 1, D>;
    static constexpr int PLANES = Run::PLANES;
    static constexpr int ROWS_PER_LANE = D / 32;  // right-hand-side rows lane + 32 i of each plane
    uint4 low[Low::WORDS];
    uint4 high[High::WORDS];  // used with 3 bits only
    __half scale[PLANES][ROWS_PER_LANE];  // of the channel of each of the lane's right-hand-side rows
    uint32_t mins[D / 64];                // of channels (D / 32) * lane .., fp16 pairs

    // A unit's slice in a stage: words [BITS * D / 32 row words][32 tokens] uint32, then the block's
    // scales [D] and mins [D] fp16.
    static constexpr int STAGE_META = 4 * BITS * D;
    static_assert(STAGE_META + 4 * D <= stage_bytes(D), "key slice fits a stage");

    // Where the lane's reads lie in a stage: the lane's first word of each plane and the scale of its first
    // right-hand-side row of each plane (byte offsets, fixed for a CTA); its other words and scales lie
    // compile-time distances further (WORD_STEP, scaleStep), so that a unit's reads are one register plus
    // immediates each.
    struct Offsets {
        int low;
        int high;
        int scale[PLANES];
    };
    static constexpr int WORD_STEP = 4 * RUN;  // bytes between the lane's consecutive words of a plane

    // Pack-axis index (channel) of right-hand-side row `lane` + 32 i of plane pl.
    __host__ __device__ static constexpr int scaleChannel(int pl, int lane, int i) {
        return pl == 0 ? Low::packIndex(KRow(lane).j, KRow(lane).P + 4 * i, KRow(lane).h)
                       : High::packIndex(KRow(lane).j, KRow(lane).P + 4 * i, KRow(lane).h);
    }
    __host__ __device__ static constexpr int scaleStep(int pl, int i) {
        return 2 * (scaleChannel(pl, 0, i) - scaleChannel(pl, 0, 0));
    }
    // Row word w's chunks are swizzled by the j of its readers.
    __host__ __device__ static constexpr int readerJ(int w) { return first_reader<Low, High, PLANES>(w); }

    // The distances do not depend on the lane (checked for every lane, row and word).
    __host__ __device__ static constexpr bool lane_independent() {
        for (int lane = 0; lane < LANES; lane++) {
            const int j = lane % 4;
            for (int w = 0; w < Low::WORDS; w++)
                if (Low::rowWord(j, w, 0) - Low::rowWord(j, 0, 0) != w
                    || readerJ(Low::rowWord(j, w, 0)) != readerJ(Low::rowWord(j, 0, 0))) return false;
            for (int pl = 0; pl < PLANES; pl++)
                for (int i = 0; i < ROWS_PER_LANE; i++)
                    if (2 * (scaleChannel(pl, lane, i) - scaleChannel(pl, lane, 0)) != scaleStep(pl, i)) return false;
        }
        return true;
    }
    static_assert(lane_independent(), "a lane's stage reads are one offset plus compile-time steps");

    __device__ __forceinline__ static Offsets offsets() {
        const int lane = threadIdx.x % LANES, j = lane % 4, rho = lane / 4;
        Offsets o;
        const int lowWord = Low::rowWord(j, 0, 0), highWord = High::rowWord(j, 0, 0);
        o.low = 4 * RUN * lowWord + 16 * swizzled(rho, readerJ(lowWord));
        o.high = PLANES == 2 ? 4 * RUN * highWord + 16 * swizzled(rho, readerJ(highWord)) : 0;
#pragma unroll
        for (int pl = 0; pl < PLANES; pl++) o.scale[pl] = STAGE_META + 2 * scaleChannel(pl, lane, 0);
        return o;
    }

    // A unit's slice in 16-byte chunks: its words, row word w of 4 tokens 4 t .. (t = 0..7) from matrix +
    // 4 (w G + inBlock) + 16 t to stage line w, position swizzled(t, readerJ(w)); then META_CHUNKS chunks of the
    // block's metadata. Lane l copies, at t = l % 8, the lines read by lanes j = l / 8: line(j, i) = line(j, 0)
    // + LINE_STEP i for i < lineCount(j), so that its copies lie fixed distances apart in the matrix and in the
    // stage; metadata chunks l, l + 32, .. (512 bytes apart).
    static constexpr int ROW_WORDS = BITS * D / 32;
    static constexpr int WORD_CHUNKS = 8 * ROW_WORDS, META_CHUNKS = 4 * D / 16;
    static constexpr int META_COPIES = (META_CHUNKS + LANES - 1) / LANES;
    __host__ __device__ static constexpr int lineCount(int j) {
        int n = 0;
        for (int w = 0; w < ROW_WORDS; w++) n += readerJ(w) == j ? 1 : 0;
        return n;
    }
    __host__ __device__ static constexpr int line(int j, int i) {  // the i-th line read by lanes j
        for (int w = 0; w < ROW_WORDS; w++)
            if (readerJ(w) == j && i-- == 0) return w;
        return -1;
    }
    __host__ __device__ static constexpr int most_lines() {
        int most = 0;
        for (int j = 0; j < 4; j++) most = lineCount(j) > most ? lineCount(j) : most;
        return most;
    }
    static constexpr int WORD_COPIES = most_lines();
    static constexpr int LINE_STEP = lineCount(0) > 1 ? line(0, 1) - line(0, 0) : 1;
    __host__ __device__ static constexpr bool evenly_spaced() {
        int copies = 0;
        for (int j = 0; j < 4; j++) {
            copies += lineCount(j);
            if (lineCount(j) > WORD_COPIES) return false;
            for (int i = 1; i < lineCount(j); i++)
                if (line(j, i) != line(j, 0) + LINE_STEP * i) return false;
        }
        return copies == ROW_WORDS;
    }
    static_assert(evenly_spaced(), "a lane's word copies lie LINE_STEP lines apart");
    static constexpr bool ALL_COPY = lineCount(0) == WORD_COPIES && lineCount(1) == WORD_COPIES
                                     && lineCount(2) == WORD_COPIES && lineCount(3) == WORD_COPIES;
    struct CopyPlan {
        int word;      // the lane's first word chunk, from matrix + 4 inBlock
        int wordStep;  // 4 LINE_STEP G
        int dest;      // its stage chunk (the others LINE_STEP lines further)
        int copies;    // lineCount(l / 8)
        int meta;      // metadata chunk l from matrix
    };
    __device__ __forceinline__ static CopyPlan copy_plan(int G) {
        const int lane = threadIdx.x % LANES, j = lane / 8, t = lane % 8;
        const int first = lineCount(j) > 0 ? line(j, 0) : 0;
        return {4 * first * G + 16 * t, 4 * LINE_STEP * G, 8 * first + swizzled(t, j), lineCount(j),
                4 * (D / 32) * BITS * G + 16 * lane};
    }

    // Starts copying a unit's slice into a stage (the caller commits).
    __device__ __forceinline__ static void issue(uint4* stage, unsigned long long matrix, int inBlock, const CopyPlan& plan) {
        const int lane = threadIdx.x % LANES;
        const unsigned long long words = matrix + 4u * inBlock + plan.word;
#pragma unroll
        for (int i = 0; i < WORD_COPIES; i++) {
            if (ALL_COPY || i < plan.copies) {
                copy_async(stage + plan.dest + 8 * LINE_STEP * i, words + (unsigned long long) (i * plan.wordStep));
            }
        }
#pragma unroll
        for (int i = 0; i < META_COPIES; i++) {
            if (META_CHUNKS % LANES == 0 || lane + LANES * i < META_CHUNKS) {
                copy_async(stage + WORD_CHUNKS + lane + LANES * i, matrix + plan.meta + 16 * LANES * i);
            }
        }
    }

    __device__ __forceinline__ void fetch(const uint4* stage, const Offsets& o) {
        const int lane = threadIdx.x % LANES;
        const unsigned char* at = reinterpret_cast<const unsigned char*>(stage);
#pragma unroll
        for (int w = 0; w < Low::WORDS; w++) low[w] = *reinterpret_cast<const uint4*>(at + o.low + WORD_STEP * w);
        if constexpr (PLANES == 2) high[0] = *reinterpret_cast<const uint4*>(at + o.high);
#pragma unroll
        for (int pl = 0; pl < PLANES; pl++)
#pragma unroll
            for (int i = 0; i < ROWS_PER_LANE; i++) scale[pl][i] = *reinterpret_cast<const __half*>(at + o.scale[pl] + scaleStep(pl, i));
#pragma unroll
        for (int i = 0; i < D / 64; i++) mins[i] = reinterpret_cast<const uint32_t*>(at + STAGE_META + 2 * D)[(D / 64) * lane + i];
    }
};

// The k order of fp_key_unit's products: k-row R (k-tile R / 16, slot R % 16) of its right-hand side holds
// channel(R), written once per CTA by prepare_keys.
struct FpKeyRows {
    __host__ __device__ static constexpr int channel(int R) {
        const int kappa = R % 16, jj = (kappa % 8) / 2, d = kappa % 2, odd = kappa / 8;
        return 32 * (R / 32) + 8 * jj + 4 * ((R / 16) % 2) + 2 * odd + d;
    }
};

// Per CTA, once the queries are in shared memory: 2^E per head (2^E >= 4 max |q|, so that q * 2^-E * scale
// * plane weight stays within fp16), the packed keys' right-hand-side weights of every k-row and the fp16 key
// rows' right-hand sides (fpKeyRows: [sets][D], FpKeyRows order).
template <int BITS, int D, int GQ>
__device__ void prepare_keys(Shared<D, GQ>& sh, float softmaxScale, uint4* fpKeyRows) {
    using K = KeyUnit<BITS, D>;
    const int warp = threadIdx.x / LANES, lane = threadIdx.x % LANES;
    for (int g = warp; g < GQ; g += WARPS) {
        float largest = 0.0f;
#pragma unroll
        for (int i = 0; i < D / 32; i++) largest = fmaxf(largest, fabsf(sh.q[g][lane + 32 * i]));
        largest = warp_max(largest);
        int e = 0;
        if (largest > 0.0f && largest < __int_as_float(0x7F800000)) {
            frexpf(largest, &e);  // largest < 2^e
            e = min(max(e + 2, -96), 96);
        }
        if (lane == 0) {
            sh.qFactor[g] = kvmix::pow2(24 + e);
            sh.scoreFactor[g] = kvmix::pow2(24 + e) * softmaxScale;
        }
    }
    __syncthreads();
    for (int at = threadIdx.x; at < K::PLANES * D * GQ; at += THREADS) {
        const int g = at % GQ, r = at / GQ;
        const int pl = r / D, rr = r % D;
        const KRow k(rr % 32);
        const int P = k.P + 4 * (rr / 32);
        const int channel = pl == 0 ? K::Low::packIndex(k.j, P, k.h) : K::High::packIndex(k.j, P, k.h);
        const int exponent = pl == 0 ? K::Low::weightExponent(P) : K::High::weightExponent(P);
        // qFactor = 2^(24 + E): the weight is q * 2^-(E + exponent)
        sh.keyWeights[r][g] = sh.q[g][channel] * kvmix::pow2(24 - exponent) / sh.qFactor[g];
    }
    for (int r = threadIdx.x; r < D; r += THREADS) {
        float x[GQ];
#pragma unroll
        for (int g = 0; g < GQ; g++) x[g] = sh.q[g][FpKeyRows::channel(r)] * kvmix::pow2(24) / sh.qFactor[g];
        RhsLayout<GQ>::store(fpKeyRows, D, r, x);
    }
    __syncthreads();
}

// Scores of one regular unit's fp16 key rows (32 tokens, rows D apart from `rows`) on the tensor cores: the
// rows as they lie are the left-hand side (m = tokens, k = channels), q * 2^-E per head the right-hand side
// (`rhs`, FpKeyRows order). Lane (r, j) = (lane / 4, lane % 4) loads, of each of its tokens 16 mt + r and
// 16 mt + r + 8, the 16 bytes of channels 32 s + 8 j .. + 7; register x of such a load is the a-fragment
// slot pair (2 j, 2 j + 1) for even x and (2 j + 8, 2 j + 9) for odd x of k-tile 2 s + x / 2. Writes the
// scores of tokens read from rows (visible, at or past keyPackedEnd); the other tokens get -inf unless the
// unit's packed keys scored them. Rows of other tokens may be stale or unwritten: each score depends on its
// own row only.
template <int D, int GQ>
__device__ __forceinline__ void fp_key_unit(const __half* rows, const uint4* rhs, const SplitView& v, int start,
                                            bool scoredPacked, const float* scoreFactor, float* unitScores,
                                            int scoreStride) {
    using Rhs = RhsLayout<GQ>;
    const int lane = threadIdx.x % LANES, r = lane / 4, j = lane % 4;
#pragma unroll 1
    for (int mt = 0; mt < 2; mt++) {
        uint4 x[2][D / 32];  // [row half h: token 16 mt + r + 8 h][s]
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int s = 0; s < D / 32; s++) x[h][s] = *reinterpret_cast<const uint4*>(rows + (size_t) (16 * mt + r + 8 * h) * D + 32 * s + 8 * j);
        float c[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};  // by k-tile parity
#pragma unroll
        for (int s = 0; s < D / 32; s++) {
            typename Rhs::Fragments f;
            Rhs::load(rhs + 32 * s, D, f);
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const uint32_t a[4] = {component(x[0][s], 2 * e), component(x[1][s], 2 * e),
                                       component(x[0][s], 2 * e + 1), component(x[1][s], 2 * e + 1)};
                Rhs::mma(c[e], a, f, e);
            }
        }
        float sum[4];
#pragma unroll
        for (int e = 0; e < 4; e++) sum[e] = c[0][e] + c[1][e];
#pragma unroll
        for (int column = 0; column < 2; column++) {
            if (!Rhs::ownsHeads(j) || (GQ != 8 && column == 1)) continue;
            const int g = Rhs::columnHead(j, column);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int token = 16 * mt + r + 8 * h;
                const int t = start + token;
                // sum * 2^E * softmaxScale, scoreFactor = 2^(24 + E) * softmaxScale
                if (t >= v.keyPackedEnd && t >= v.first && t <= v.last) {
                    unitScores[g * scoreStride + token] = Rhs::value(sum, h, column) * scoreFactor[g] * (1.0f / 16777216.0f);
                } else if (!scoredPacked) {
                    unitScores[g * scoreStride + token] = NEG_INF;
                }
            }
        }
    }
}

// scores[token][head] (unscaled sums of code * weight) of one packed key plane: c[m-tile][k-tile parity].
template <typename Pairs, int WORDS, int D, int GQ>
__device__ __forceinline__ void packed_key_plane(const uint4 (&words)[WORDS], const uint4* rows, float (&c)[2][2][4]) {
    using Rhs = RhsLayout<GQ>;
    const int j = threadIdx.x % 4;
#pragma unroll
    for (int kp = 0; kp < D / 32; kp++) {
        typename Rhs::Fragments f;
        Rhs::load(rows + 32 * kp, Layout<D, GQ>::ROWS, f);
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
                        a[2 * e + h] = Pairs::pair(component(words[Pairs::wordSlot(P / Pairs::PER_SHIFT)], 2 * mt + h), j, P);
                    }
                Rhs::mma(c[mt][kk], a, f, kk);
            }
        }
    }
}

// Pass 1 for one key width: scores of every unit of the warp (-inf where not visible), times softmaxScale.
template <int BITS, int D, int GQ>
__device__ void key_pass(const CacheParams& cache, const SplitView& v, const UnitSources* sources, Shared<D, GQ>& sh,
                         float softmaxScale, float* scores, int scoreStride, uint4* stages, uint4* fpKeyRows) {
    using K = KeyUnit<BITS, D>;
    using Rhs = RhsLayout<GQ>;
    using L = Layout<D, GQ>;
    static_assert(STAGES == 2, "a warp alternates between two stages");
    const int warp = threadIdx.x / LANES;
    const int lane = threadIdx.x % LANES, j = lane % 4, rho = lane / 4;
    uint4* rows = sh.rows[warp];
    Rhs::clear_rows(rows, L::SETS * L::ROWS);  // both passes then write the heads' columns only
    typename K::CopyPlan copyPlan = K::copy_plan(cache.groupSize);
    pin(copyPlan.word, copyPlan.wordStep, copyPlan.dest, copyPlan.copies, copyPlan.meta);
    // The packed slice of a warp's next unit is copied into its other stage while it computes the current one
    // (copy_unit_ahead). The first unit's copies are asked for before the queries are prepared, so that their
    // latency hides there.
    constexpr int STAGE = stage_bytes(D) / 16;  // uint4 per stage
    copy_unit_ahead<K, true, D>(v, sources, warp, stages, copyPlan);
    prepare_keys<BITS, D, GQ>(sh, softmaxScale, fpKeyRows);
    typename K::Offsets offsets = K::offsets();
    pin(offsets.low, offsets.high, offsets.scale[0], offsets.scale[K::PLANES - 1]);
    // With few heads the lane's right-hand-side weights and the queries of its min channels stay in registers.
    constexpr bool HOLD = GQ * K::PLANES * K::ROWS_PER_LANE <= 8;
    constexpr int MIN_CHANNELS = D / 32;  // the lane's channels (D / 32) * lane ..
    float heldWeight[HOLD ? K::PLANES : 1][HOLD ? K::ROWS_PER_LANE : 1][HOLD ? GQ : 1];
    float heldQ[HOLD ? GQ : 1][HOLD ? MIN_CHANNELS : 1];
    if constexpr (HOLD) {
#pragma unroll
        for (int pl = 0; pl < K::PLANES; pl++)
#pragma unroll
            for (int i = 0; i < K::ROWS_PER_LANE; i++)
#pragma unroll
                for (int g = 0; g < GQ; g++) heldWeight[pl][i][g] = sh.keyWeights[pl * D + lane + 32 * i][g];
#pragma unroll
        for (int g = 0; g < GQ; g++)
#pragma unroll
            for (int c = 0; c < MIN_CHANNELS; c++) heldQ[g][c] = sh.q[g][MIN_CHANNELS * lane + c];
    }
    auto weight = [&](int pl, int i, int g) {
        if constexpr (HOLD) return heldWeight[pl][i][g];
        else return sh.keyWeights[pl * D + lane + 32 * i][g];
    };
    auto minQuery = [&](int g, int c) {
        if constexpr (HOLD) return heldQ[g][c];
        else return sh.q[g][MIN_CHANNELS * lane + c];
    };
    for (int u = warp, stage = 0; u < v.unitCount; u += WARPS, stage ^= 1) {
        copy_unit_ahead<K, true, D>(v, sources, u + WARPS, stages + (stage ^ 1) * STAGE, copyPlan);
        wait_async<1>();  // this lane's copies of unit u have landed
        __syncwarp();     // and every lane's
        const UnitSources src = sources[u];
        const int start = v.unitStart(u, cache.sinks);
        float* unitScores = scores + u * RUN;  // [g * scoreStride + token]
        if ((src.flags & KEYS_PACKED) != 0) {
            K current;
            current.fetch(stages + stage * STAGE, offsets);
            // right-hand sides: q * 2^-(E + exponent) * scale of each k-row's channel; a batch of rows' weights
            // is read before their stores (which the compiler does not move reads past)
            constexpr int ROW_BATCH = GQ <= 4 ? K::ROWS_PER_LANE : 1;
#pragma unroll
            for (int pl = 0; pl < K::PLANES; pl++)
#pragma unroll
                for (int i0 = 0; i0 < K::ROWS_PER_LANE; i0 += ROW_BATCH) {
                    float x[ROW_BATCH][GQ];
#pragma unroll
                    for (int i = 0; i < ROW_BATCH; i++) {
                        const float scale = __half2float(current.scale[pl][i0 + i]);
#pragma unroll
                        for (int g = 0; g < GQ; g++) x[i][g] = weight(pl, i0 + i, g) * scale;
                    }
#pragma unroll
                    for (int i = 0; i < ROW_BATCH; i++) Rhs::store_heads(rows, L::ROWS, pl * D + lane + 32 * (i0 + i), x[i]);
                }
            // sum_c q_c * min_c over the lane's channels, then per head (lane l: head l / (32 / GQ))
            float partial[GQ];
#pragma unroll
            for (int g = 0; g < GQ; g++) {
                float sum = 0.0f;
#pragma unroll
                for (int i = 0; i < D / 64; i++) {
                    const float2 m = __half22float2(*reinterpret_cast<const __half2*>(&current.mins[i]));
                    sum = fmaf(minQuery(g, 2 * i), m.x, fmaf(minQuery(g, 2 * i + 1), m.y, sum));
                }
                partial[g] = sum;
            }
            __syncwarp();
            float c[2][2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int kk = 0; kk < 2; kk++)
#pragma unroll
                    for (int e = 0; e < 4; e++) c[mt][kk][e] = 0.0f;
            packed_key_plane<typename K::Low, K::Low::WORDS, D, GQ>(current.low, rows, c);
            if constexpr (K::PLANES == 2) packed_key_plane<typename K::High, K::High::WORDS, D, GQ>(current.high, rows + D, c);
            // reduced after the products are issued, so that its shuffles overlap them
            const float bias = warp_sum_scatter<GQ>(partial) * softmaxScale;
            // The lane's 4 tokens 4 rho .. 4 rho + 3 (m-tile mt, row half h: token 4 rho + 2 mt + h) of the heads of
            // its accumulator columns, as one 16-byte store per head.
#pragma unroll
            for (int column = 0; column < 2; column++) {
                const int g = min(Rhs::columnHead(j, column), GQ - 1);
                const float headBias = __shfl_sync(0xffffffffu, bias, g * (LANES / GQ));
                if (!Rhs::ownsHeads(j) || (GQ != 8 && column == 1)) continue;
                float score[4];
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        float sum[4];
#pragma unroll
                        for (int e = 0; e < 4; e++) sum[e] = c[mt][0][e] + c[mt][1][e];
                        // (sum * qFactor + bias) * softmaxScale, bias already scaled
                        score[2 * mt + h] = fmaf(Rhs::value(sum, h, column), sh.scoreFactor[g], headBias);
                    }
                if ((src.flags & ALL_VISIBLE) == 0) {
#pragma unroll
                    for (int k = 0; k < 4; k++) {
                        const int t = start + 4 * rho + k;
                        if (t < v.first || t > v.last) score[k] = NEG_INF;
                    }
                }
                *reinterpret_cast<float4*>(unitScores + g * scoreStride + 4 * rho) = make_float4(score[0], score[1], score[2], score[3]);
            }
            __syncwarp();  // the rows are rewritten for the next unit; fp16-row tokens are written over below
        }
        if ((src.flags & KEYS_ROWS) != 0) {
            fp_key_unit<D, GQ>(reinterpret_cast<const __half*>(src.keyRows), fpKeyRows, v, start,
                               (src.flags & KEYS_PACKED) != 0, sh.scoreFactor, unitScores, scoreStride);
        }
        // sinks and units with no keys to read: one token per lane
        if ((src.flags & KEYS_PER_TOKEN) != 0) {
            const bool isSink = u < v.sinkUnits;
            const int t = start + lane;
            const bool visible = t >= v.first && t <= v.last && (!isSink || t < cache.sinks);
            const bool fromRows = src.keyRows != 0 && visible && (isSink || t >= v.keyPackedEnd);
            if (fromRows || src.keyMatrix == 0) {
                float dot[GQ];
#pragma unroll
                for (int g = 0; g < GQ; g++) dot[g] = 0.0f;
                if (fromRows) fp_key_dots<D, GQ>(reinterpret_cast<const __half*>(src.keyRows) + (size_t) lane * D, &sh.q[0][0], dot);
#pragma unroll
                for (int g = 0; g < GQ; g++) unitScores[g * scoreStride + lane] = fromRows ? dot[g] * softmaxScale : NEG_INF;
            }
        }
        __syncwarp();  // the stage is refilled next
    }
    wait_async<0>();
}

// ---- values ---------------------------------------------------------------------------------------------

// The lane's part of one unit's packed values: lane axis = D channels, pack axis = G tokens (this unit's run),
// groups of min(G, D) channels per token with a (scale, min) each. Lane (rho, j) reads channels 32 a + 4 rho ..
// + 3 (mma m-tile 2a + m2, row half h: channel 32 a + 4 rho + 2 m2 + h) of its pairs' word of each plane, and
// the metadata of the token of its right-hand-side row (k-row = lane) of each plane.
template <int BITS, int D>
struct ValueUnit {
    using Run = kvmix::RunLayout<BITS>;
    using Low = PlanePairs<BITS, 0, RUN>;
    using High = PlanePairs<BITS, 1, RUN>;
    static constexpr int PLANES = Run::PLANES;
    static constexpr int MAX_GROUPS = max_value_groups(D);
    static_assert(Low::WORDS == 1 && High::WORDS == 1, "a lane reads one word per value plane");
    uint4 words[PLANES][D / 32];
    __half scale[PLANES][MAX_GROUPS];
    __half mins[MAX_GROUPS];

    // A unit's slice in a stage: its run's words [BITS][D channels] uint32, then MAX_GROUPS slots of scales and
    // MAX_GROUPS slots of mins, each [32 tokens] fp16; slot s holds group min(s, groups - 1), so that every
    // slot can be read without a branch (slots past the last group repeat it: their right-hand-side rows are
    // never read and their min sums never used).
    static constexpr int STAGE_META_CHUNK = BITS * D / 4;  // uint4 index of the metadata
    static constexpr int SLOT_BYTES = 2 * RUN;
    static_assert(16 * STAGE_META_CHUNK + 2 * MAX_GROUPS * SLOT_BYTES <= stage_bytes(D), "value slice fits a stage");

    // Per lane, fixed for a CTA: where its reads lie in a stage (byte offsets; scale and min slots lie
    // compile-time distances further) and what its k-rows weigh.
    struct Lane {
        int word[PLANES];   // the lane's first word (channels 4 rho ..) of each plane
        int scale[PLANES];  // scale slot 0 at the token of the lane's k-row of each plane
        int token[PLANES];  // token (of the unit) of the lane's k-row of each plane
        int weightExponent[PLANES];
    };

    // Word x of the run's chunks are swizzled by the j of its readers.
    __host__ __device__ static constexpr int readerJ(int x) { return first_reader<Low, High, PLANES>(x); }

    __device__ __forceinline__ static Lane lane_info() {
        const int lane = threadIdx.x % LANES, j = lane % 4, rho = lane / 4;
        const KRow k(lane);  // the lane's right-hand-side row
        Lane l;
#pragma unroll
        for (int pl = 0; pl < PLANES; pl++) {
            const int word = pl == 0 ? Low::rowWord(j, 0, 0) : High::rowWord(j, 0, 0);
            l.word[pl] = 4 * word * D + 16 * swizzled(rho, readerJ(word));
            l.token[pl] = pl == 0 ? Low::packIndex(k.j, k.P, k.h) : High::packIndex(k.j, k.P, k.h);
            l.scale[pl] = 16 * STAGE_META_CHUNK + 2 * l.token[pl];
            l.weightExponent[pl] = pl == 0 ? Low::weightExponent(k.P) : High::weightExponent(k.P);
        }
        return l;
    }

    // Lane l copies the run's word chunks l, l + 32, .. (the words are contiguous: at matrix + 4 (inBlock / 32)
    // BITS D; chunk c of word c / (D / 4) goes to line c / 8 of the stage, its position swizzled by the word's
    // readers) and, for l < 8 MAX_GROUPS, chunk l % 4 of metadata slot l / 4 (scale slots, then min slots) for
    // the unit's tokens: stage chunk STAGE_META_CHUNK + l, at meta + 2 (group row G + inBlock) + 16 (l % 4),
    // group row = group (scales) or groups + group (mins). Its offset from the block's matrix is fixed for a CTA.
    static constexpr int WORD_CHUNKS = BITS * D / 4;
    static constexpr int WORD_COPIES = (WORD_CHUNKS + LANES - 1) / LANES;
    static constexpr int META_LANES = 8 * MAX_GROUPS;
    // 2 readerJ(x) of word x < BITS, 4 bits each: the swizzle of chunk c is that of word c / (D / 4).
    __host__ __device__ static constexpr unsigned swizzles() {
        unsigned table = 0;
        for (int x = 0; x < BITS; x++) table |= unsigned(2 * readerJ(x)) << (4 * x);
        return table;
    }
    static constexpr unsigned SWIZZLES = swizzles();
    struct CopyPlan {
        int meta;  // from matrix + 2 inBlock
    };
    __device__ __forceinline__ static CopyPlan copy_plan(int G, int groups) {
        const int lane = threadIdx.x % LANES, slot = lane / 4;
        const int group = min(slot % MAX_GROUPS, groups - 1);
        const int groupRow = slot < MAX_GROUPS ? group : groups + group;
        return {4 * (G / RUN) * BITS * D + 2 * groupRow * G + 16 * (lane % 4)};
    }

    // Starts copying a unit's slice into a stage (the caller commits).
    __device__ __forceinline__ static void issue(uint4* stage, unsigned long long matrix, int inBlock, const CopyPlan& plan) {
        const int lane = threadIdx.x % LANES;
        const unsigned long long words = matrix + (unsigned) inBlock * (BITS * D / 8);  // inBlock is a multiple of 32
#pragma unroll
        for (int i = 0; i < WORD_COPIES; i++) {
            const int c = lane + LANES * i;
            const int swizzle = (SWIZZLES >> (4 * (c / (D / 4)))) & 7;  // a constant with D = 128 (c / 32 = i)
            if (WORD_CHUNKS % LANES == 0 || c < WORD_CHUNKS) copy_async(stage + (c ^ swizzle), words + 16 * c);
        }
        if (META_LANES == LANES || lane < META_LANES) copy_async(stage + STAGE_META_CHUNK + lane, matrix + 2u * inBlock + plan.meta);
    }

    __device__ __forceinline__ void fetch(const uint4* stage, const Lane& l) {
        const unsigned char* at = reinterpret_cast<const unsigned char*>(stage);
#pragma unroll
        for (int pl = 0; pl < PLANES; pl++)
#pragma unroll
            for (int a = 0; a < D / 32; a++) words[pl][a] = *reinterpret_cast<const uint4*>(at + l.word[pl] + 128 * a);
#pragma unroll
        for (int grp = 0; grp < MAX_GROUPS; grp++) {
#pragma unroll
            for (int pl = 0; pl < PLANES; pl++) scale[pl][grp] = *reinterpret_cast<const __half*>(at + l.scale[pl] + SLOT_BYTES * grp);
            mins[grp] = *reinterpret_cast<const __half*>(at + l.scale[0] + SLOT_BYTES * (MAX_GROUPS + grp));
        }
    }
};

// acc[m-tile] += codes x right-hand sides of one packed value plane (rows: [group][32 k-rows]).
// groupRows[a]: first row of the group of channels 32 a ..
template <typename Pairs, int D, int GQ>
__device__ __forceinline__ void packed_value_plane(const uint4 (&words)[D / 32], const uint4* rows,
                                                   const int (&groupRows)[D / 32], float (&acc)[D / 16][4]) {
    using Rhs = RhsLayout<GQ>;
    const int j = threadIdx.x % 4;
#pragma unroll
    for (int a = 0; a < D / 32; a++) {
        typename Rhs::Fragments f;
        Rhs::load(rows + groupRows[a], Layout<D, GQ>::ROWS, f);
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

// Pass 2 for one value width: the warp's share of sum_t p_t * v_t, written to its rows as [GQ][D] floats.
// The first unit's loads are issued before the softmax, so their latency hides behind it.
template <int BITS, int D, int GQ>
__device__ void value_pass(const CacheParams& cache, const SplitView& v, const UnitSources* sources, Shared<D, GQ>& sh,
                           float* scores, int scoreStride, uint4* stages) {
    using V = ValueUnit<BITS, D>;
    using Rhs = RhsLayout<GQ>;
    using L = Layout<D, GQ>;
    constexpr int CPL = L::CPL;
    constexpr int MAX_GROUPS = V::MAX_GROUPS;
    const int warp = threadIdx.x / LANES;
    const int lane = threadIdx.x % LANES;
    const int G = cache.groupSize;
    const int groupLength = min(G, D);
    const int groups = D / groupLength;
    uint4* rows = sh.rows[warp];
    typename V::Lane info = V::lane_info();
    pin(info.word[0], info.word[V::PLANES - 1], info.scale[0], info.scale[V::PLANES - 1]);
    int groupRows[D / 32];
#pragma unroll
    for (int a = 0; a < D / 32; a++) groupRows[a] = 32 * a / groupLength * RUN;
    // Packed sums in the mma layout: acc[m-tile][c] = true sums * 2^(Z - 24); fp16 rows and the min terms in
    // the lane's channels lane * CPL ..: plain[g][cc].
    float acc[D / 16][4];
#pragma unroll
    for (int mt = 0; mt < D / 16; mt++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[mt][e] = 0.0f;
    int Z = 0;
    bool haveZ = false;
    float plain[GQ][CPL];
    float minSum[GQ][MAX_GROUPS];
#pragma unroll
    for (int g = 0; g < GQ; g++) {
#pragma unroll
        for (int cc = 0; cc < CPL; cc++) plain[g][cc] = 0.0f;
#pragma unroll
        for (int grp = 0; grp < MAX_GROUPS; grp++) minSum[g][grp] = 0.0f;
    }
    // packed slices are copied into the warp's stages and FP rows asked into L2 a unit ahead, as in key_pass
    typename V::CopyPlan copyPlan = V::copy_plan(G, groups);
    pin(copyPlan.meta);
    constexpr int STAGE = stage_bytes(D) / 16;
    copy_unit_ahead<V, false, D>(v, sources, warp, stages, copyPlan);
    local_softmax<GQ>(scores, scoreStride, &sh.reduction[0][0], sh.rowMax, sh.rowSum);
    for (int u = warp, stage = 0; u < v.unitCount; u += WARPS, stage ^= 1) {
        copy_unit_ahead<V, false, D>(v, sources, u + WARPS, stages + (stage ^ 1) * STAGE, copyPlan);
        wait_async<1>();
        __syncwarp();
        const UnitSources src = sources[u];
        const int start = v.unitStart(u, cache.sinks);
        const float* p = scores + u * RUN;  // p[g * scoreStride + token]
        if ((src.flags & VALUES_PACKED) != 0) {
            V current;
            current.fetch(stages + stage * STAGE, info);
            // Z: the unit's largest scale * 2^Z within [2^4, 2^13) (headroom for the weight 4 of a 3-bit high
            // plane; p <= 1), so right-hand sides stay below 2^15; changed only when it leaves that range
            float largest = 0.0f;
#pragma unroll
            for (int pl = 0; pl < V::PLANES; pl++)
#pragma unroll
                for (int grp = 0; grp < MAX_GROUPS; grp++) largest = fmaxf(largest, __half2float(current.scale[pl][grp]));
            const float scaled = largest * kvmix::pow2(Z);
            const bool inRange = haveZ && !__any_sync(0xffffffffu, scaled >= 8192.0f) && __any_sync(0xffffffffu, scaled >= 16.0f);
            if (!inRange) {
                largest = warp_max(largest);
                if (largest > 0.0f) {
                    int e;
                    frexpf(largest, &e);  // largest in [2^(e-1), 2^e)
                    const int z = 13 - e;
                    if (!haveZ || z < Z || z > Z + 8) {
                        const float rescale = kvmix::pow2(z - Z);
#pragma unroll
                        for (int mt = 0; mt < D / 16; mt++)
#pragma unroll
                            for (int c = 0; c < 4; c++) acc[mt][c] *= rescale;
                        Z = z;
                        haveZ = true;
                    }
                }
            }
            // Tokens at or past valuePackedEnd have no metadata (their values are fp16 rows); tokens outside the
            // visible range have p = 0 (exp of a -inf score) and finite metadata, so they add nothing.
            // min terms: every token once, the token of the lane's plane-0 k-row
            {
                const bool live = start + info.token[0] < v.valuePackedEnd;
                float pm[GQ];
#pragma unroll
                for (int g = 0; g < GQ; g++) pm[g] = live ? p[g * scoreStride + info.token[0]] : 0.0f;
#pragma unroll
                for (int grp = 0; grp < MAX_GROUPS; grp++) {
                    const float mn = __half2float(current.mins[grp]);
#pragma unroll
                    for (int g = 0; g < GQ; g++) minSum[g][grp] = fmaf(pm[g], mn, minSum[g][grp]);
                }
            }
            // right-hand sides: p * scale * 2^(Z - exponent) of the token of each k-row, per plane and group
#pragma unroll
            for (int pl = 0; pl < V::PLANES; pl++) {
                const int token = info.token[pl];
                const bool live = start + token < v.valuePackedEnd;
                const float weight = kvmix::pow2(Z - info.weightExponent[pl]);
                float pt[GQ];
#pragma unroll
                for (int g = 0; g < GQ; g++) pt[g] = live ? p[g * scoreStride + token] * weight : 0.0f;
#pragma unroll
                for (int grp = 0; grp < MAX_GROUPS; grp++) {
                    const float scale = __half2float(current.scale[pl][grp]);
                    float x[GQ];
#pragma unroll
                    for (int g = 0; g < GQ; g++) x[g] = pt[g] * scale;
                    Rhs::store_heads(rows, L::ROWS, (pl * MAX_GROUPS + grp) * RUN + lane, x);
                }
            }
            __syncwarp();
            packed_value_plane<typename V::Low, D, GQ>(current.words[0], rows, groupRows, acc);
            if constexpr (V::PLANES == 2) {
                packed_value_plane<typename V::High, D, GQ>(current.words[V::PLANES - 1], rows + MAX_GROUPS * RUN, groupRows, acc);
            }
            __syncwarp();  // the rows are rewritten for the next unit
        }
        if ((src.flags & VALUES_ROWS) != 0) {
            const bool isSink = u < v.sinkUnits;
            const int fpFrom = max(isSink ? start : max(start, v.valuePackedEnd), v.first);
            const int fpTo = min(min(start + RUN, v.last + 1), isSink ? cache.sinks : start + RUN);
            const __half* fpRows = reinterpret_cast<const __half*>(src.valueRows);
            if (fpTo > fpFrom) {
                fp_value_sums<D, GQ>(fpRows + (size_t) (fpFrom - start) * D, fpTo - fpFrom, p + (fpFrom - start), scoreStride, plain);
            }
        }
        __syncwarp();  // the stage is refilled next
    }
    wait_async<0>();
    // The min terms were summed per token (lane); every channel of a group gets its group's total.
    // The lane's place is read again here: kept in registers across the loop, ptxas spilled it.
    const int laneAt = lane_id(), jAt = laneAt % 4, rhoAt = laneAt / 4;
    const int myGroup = laneAt * CPL / groupLength;
#pragma unroll
    for (int g = 0; g < GQ; g++) {
#pragma unroll
        for (int grp = 0; grp < MAX_GROUPS; grp++) {
            const float total = warp_sum(minSum[g][grp]);
            if (grp == myGroup) {
#pragma unroll
                for (int cc = 0; cc < CPL; cc++) plain[g][cc] += total;
            }
        }
    }
    // The warp's output [GQ][D] into its rows: the plain part, then the packed sums added by their lanes.
    float* out = reinterpret_cast<float*>(rows);
#pragma unroll
    for (int g = 0; g < GQ; g++)
#pragma unroll
        for (int cc = 0; cc < CPL; cc++) out[g * D + laneAt * CPL + cc] = plain[g][cc];
    __syncwarp();
    const float fromAcc = kvmix::pow2(24 - Z);
#pragma unroll
    for (int column = 0; column < 2; column++) {
        if (!Rhs::ownsHeads(jAt) || (GQ != 8 && column == 1)) continue;
        const int g = Rhs::columnHead(jAt, column);
#pragma unroll
        for (int mt = 0; mt < D / 16; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int channel = 32 * (mt / 2) + 4 * rhoAt + 2 * (mt % 2) + h;
                out[g * D + channel] += Rhs::value(acc[mt], h, column) * fromAcc;
            }
    }
}

// The query heads of this CTA: blockIdx.y = kvHead * tiles + t, tile t of the KV head's `group` query heads
// holds heads t GQ .. t GQ + count - 1 (count < GQ only in the last tile, the rest zero queries).
template <int GQ>
struct HeadTile {
    int kvHead, first, count;  // first: the query head (of kvHeads * group) of the CTA's head 0
    __device__ __forceinline__ explicit HeadTile(int group) {
        const int tiles = (group + GQ - 1) / GQ, t = blockIdx.y % tiles;
        kvHead = blockIdx.y / tiles;
        first = kvHead * group + t * GQ;
        count = min(GQ, group - t * GQ);
    }
};

// The CTA's queries into sh.q (fp32), zero for heads past tile.count; seqRow: the sequence's first query head.
template <int D, int GQ>
__device__ __forceinline__ void load_queries(Shared<D, GQ>& sh, const void* __restrict__ query, int queryHalf,
                                             size_t seqRow, const HeadTile<GQ>& tile) {
    for (int i = threadIdx.x; i < GQ * D; i += THREADS) {
        const size_t at = (seqRow + tile.first) * D + i;
        sh.q[i / D][i % D] = i / D >= tile.count ? 0.0f
                             : queryHalf         ? __half2float(reinterpret_cast<const __half*>(query)[at])
                                                 : reinterpret_cast<const float*>(query)[at];
    }
}

template <int D, int GQ>
__device__ void attend_split(const CacheParams* __restrict__ cacheParams, const int* __restrict__ sequenceState,
                             const void* __restrict__ query, int queryHalf, int group, float softmaxScale,
                             int splitUnits, float* __restrict__ partialAcc, float* __restrict__ partialStats) {
    __shared__ __align__(16) Shared<D, GQ> sh;
    extern __shared__ __align__(16) unsigned char dynamicShared[];
    const CacheParams cache = *cacheParams;
    const int split = blockIdx.x;
    const int head = HeadTile<GQ>(group).kvHead;
    const int seq = blockIdx.z;
    const int splits = gridDim.x;

    SplitView v;
    v.length = sequenceState[seq * 3];
    v.keyPackedEnd = sequenceState[seq * 3 + 1];
    v.valuePackedEnd = sequenceState[seq * 3 + 2];
    v.last = v.length - 1;
    v.first = cache.window > 0 ? max(0, v.last - cache.window + 1) : 0;
    v.sinkUnits = split == 0 ? (cache.sinks + RUN - 1) / RUN : 0;
    v.unitCount = v.sinkUnits + splitUnits;
    v.split = split;
    v.splits = splits;
    const int scoreStride = v.unitCount * RUN;
    uint4* fpKeyRows = reinterpret_cast<uint4*>(dynamicShared);                      // [SETS][D], first: a fixed address
    UnitSources* sources = reinterpret_cast<UnitSources*>(dynamicShared + FP_KEY_ROW_BYTES * D);  // [unitCount]
    float* scores = reinterpret_cast<float*>(sources + v.unitCount);                // [GQ][unitCount * 32]
    uint4* stages = reinterpret_cast<uint4*>(scores + GQ * scoreStride) + (threadIdx.x / LANES) * STAGES * (stage_bytes(D) / 16);

    load_queries<D, GQ>(sh, query, queryHalf, (size_t) seq * cache.kvHeads * group, HeadTile<GQ>(group));
    // Where each unit's tokens live: one table lookup per unit, done once for the CTA.
    for (int u = threadIdx.x; u < v.unitCount; u += THREADS) {
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
                if (start < v.keyPackedEnd) src.keyMatrix = cache.keys.blocks[slot] + head * cache.keys.headStride;
                if (start + RUN > v.keyPackedEnd) src.keyRows = cache.keys.chunks[slot] + row;
                if (start < v.valuePackedEnd) src.valueMatrix = cache.values.blocks[slot] + head * cache.values.headStride;
                if (start + RUN > v.valuePackedEnd) src.valueRows = cache.values.chunks[slot] + row;
                if (start >= v.first && start + RUN - 1 <= v.last) src.flags |= ALL_VISIBLE;
            }
        }
        const bool isSink = u < v.sinkUnits;
        src.flags |= (src.keyMatrix != 0 ? KEYS_PACKED : 0) | (src.keyRows != 0 && !isSink ? KEYS_ROWS : 0)
                   | ((src.keyRows != 0 && isSink) || (src.keyRows == 0 && src.keyMatrix == 0) ? KEYS_PER_TOKEN : 0)
                   | (src.valueMatrix != 0 ? VALUES_PACKED : 0) | (src.valueRows != 0 ? VALUES_ROWS : 0);
        sources[u] = src;
    }
    __syncthreads();

    switch (cache.keys.bits) {
        case 1: key_pass<1, D, GQ>(cache, v, sources, sh, softmaxScale, scores, scoreStride, stages, fpKeyRows); break;
        case 2: key_pass<2, D, GQ>(cache, v, sources, sh, softmaxScale, scores, scoreStride, stages, fpKeyRows); break;
        case 3: key_pass<3, D, GQ>(cache, v, sources, sh, softmaxScale, scores, scoreStride, stages, fpKeyRows); break;
        default: key_pass<4, D, GQ>(cache, v, sources, sh, softmaxScale, scores, scoreStride, stages, fpKeyRows); break;
    }
    __syncthreads();

    // Pass 2 (with the softmax): weighted sum of the values, each warp's into its rows.
    switch (cache.values.bits) {
        case 1: value_pass<1, D, GQ>(cache, v, sources, sh, scores, scoreStride, stages); break;
        case 2: value_pass<2, D, GQ>(cache, v, sources, sh, scores, scoreStride, stages); break;
        case 3: value_pass<3, D, GQ>(cache, v, sources, sh, scores, scoreStride, stages); break;
        default: value_pass<4, D, GQ>(cache, v, sources, sh, scores, scoreStride, stages); break;
    }

    // Sum the warps' outputs; write the partial output [seq][queryHead][split][D] and (max, sum).
    __syncthreads();
    const HeadTile<GQ> tile(group);  // again here: not held in registers through the passes
    const size_t firstRow = (size_t) seq * cache.kvHeads * group + tile.first;
    for (int i = threadIdx.x; i < GQ * D; i += THREADS) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; w++) s += reinterpret_cast<const float*>(sh.rows[w])[i];
        const int g = i / D;
        if (g < tile.count) partialAcc[((firstRow + g) * splits + split) * D + i % D] = s;
    }
    if (threadIdx.x < tile.count) {
        const size_t row = firstRow + threadIdx.x;
        partialStats[(row * splits + split) * 2] = sh.rowMax[threadIdx.x];
        partialStats[(row * splits + split) * 2 + 1] = sh.rowSum[threadIdx.x];
    }
}

}  // namespace

// Sizes of the dynamic shared memory layout below, read by the host (DeviceBatchKvCache.attentionSharedBytes).
extern "C" __device__ int kvmix_attend_unit_source_bytes = sizeof(UnitSources);
extern "C" __device__ int kvmix_attend_stage_bytes_per_channel = STAGES * STAGE_BYTES_PER_CHANNEL;  // per warp
extern "C" __device__ int kvmix_attend_fp_key_rows_bytes_per_channel = FP_KEY_ROW_BYTES;  // per CTA

// CTAs per multiprocessor each kernel is built for (register budget 65536 / (THREADS * CTAs)): what ptxas
// reaches unbounded for these kernels, held so that a code change cannot silently cost a CTA.
__host__ __device__ constexpr int attend_min_ctas(int d, int gq) {
    return d == 64 ? 4 : gq == 1 ? 4 : gq == 8 ? 2 : 3;
}

// cache:          CacheParams (written once per cache)
// sequenceState:  [batch][3] = length, keys' packedEnd, values' packedEnd
// query:          [batch][kvHeads * group][D], fp16 if queryHalf else fp32
// group:          query heads per KV head (any >= 1); grid (splits, kvHeads * ceil(group / GQ), batch)
// partialAcc:     [batch][queryHeads][splits][D] fp32;  partialStats: [batch][queryHeads][splits][2] (max, sum)
// dynamic shared: FP_KEY_ROW_BYTES * D + unitCount * (sizeof(UnitSources) + GQ * 32 * 4)
//                 + WARPS * STAGES * stage_bytes(D) bytes, unitCount = splitUnits + sink units
#define KVMIX_ATTEND(D, GQ)                                                                                  \
    extern "C" __global__ void __launch_bounds__(THREADS, attend_min_ctas(D, GQ)) kvmix_attend_d##D##_g##GQ( \
            const CacheParams* cache, const int* sequenceState, const void* query, int queryHalf, int group, \
            float softmaxScale, int splitUnits, float* partialAcc, float* partialStats) {                   \
        attend_split<D, GQ>(cache, sequenceState, query, queryHalf, group, softmaxScale, splitUnits,        \
                            partialAcc, partialStats);                                                       \
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
