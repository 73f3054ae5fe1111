// Packed code words of FORMAT.md section 3.1, the CUDA side of io.kvmix.core.quant.BitWidth:
// the one place in CUDA that knows how a width is split into bit planes and where a code lives.
//
//   bits | planes (width @ code bit)  | words per run of 32 codes
//   1    | 1-bit @ 0                  | 1
//   2    | 2-bit @ 0                  | 2
//   3    | 2-bit @ 0, then 1-bit @ 2  | 3   (low plane words 0-1, high plane word 2)
//   4    | 4-bit @ 0                  | 4
//
// Code i (0..31) of a run lives in low-plane word i / (32 / LOW) at bit LOW * (i % (32 / LOW)); for
// 3 bits, its bit 2 lives in word 2 at bit i. A row of a packed matrix holds its runs one after another,
// each run's words in the order above.
#pragma once
#include <cstdint>

namespace kvmix {

constexpr int RUN = 32;  // codes per run along the pack axis
constexpr float TWO_POW_23 = 8388608.0f;  // the fp32 whose last mantissa bit is worth 1 (bits 0x4B000000)

template <int BITS> struct BitPlanes;
template <> struct BitPlanes<1> { static constexpr int LOW = 1; static constexpr bool HIGH = false; };
template <> struct BitPlanes<2> { static constexpr int LOW = 2; static constexpr bool HIGH = false; };
template <> struct BitPlanes<3> { static constexpr int LOW = 2; static constexpr bool HIGH = true; };
template <> struct BitPlanes<4> { static constexpr int LOW = 4; static constexpr bool HIGH = false; };

// Where code i of a run lives (writing), and which code a plane bit holds (reading).
template <int BITS>
struct RunLayout {
    static constexpr int LOW = BitPlanes<BITS>::LOW;
    static constexpr int PER_WORD = 32 / LOW;
    static constexpr bool HIGH = BitPlanes<BITS>::HIGH;
    static constexpr int PLANES = HIGH ? 2 : 1;

    __host__ __device__ static constexpr int lowWord(int i) { return i / PER_WORD; }
    __host__ __device__ static constexpr int lowBit(int i) { return LOW * (i % PER_WORD); }

    // Width of plane p's codes (the high plane of 3 bits holds 1 bit per code) and its code bit.
    __host__ __device__ static constexpr int planeWidth(int p) { return p == 0 ? LOW : 1; }
    __host__ __device__ static constexpr int planeShift(int p) { return p == 0 ? 0 : LOW; }

    // Word w of plane p counted along a row (plane words of run 0, then of run 1, ...): its index among the
    // row's words.
    __host__ __device__ static constexpr int rowWord(int p, int w) {
        return (w / (p == 0 ? LOW : 1)) * BITS + (p == 0 ? w % LOW : LOW);
    }
    // The pack-axis index of the code whose plane-p bits start at bit b of the plane's word w (as above).
    __host__ __device__ static constexpr int codeAt(int p, int w, int b) {
        return p == 0 ? RUN * (w / LOW) + PER_WORD * (w % LOW) + b / LOW : RUN * w + b;
    }
};

// The bits that code i of a run (0 <= code < 2^BITS) holds in word k of the run; 0 where it has none.
// With k and i known at compile time this folds to one shift.
template <int BITS>
__device__ __forceinline__ uint32_t run_word_bits(int k, int i, uint32_t code) {
    using Layout = RunLayout<BITS>;
    uint32_t bits = k == Layout::lowWord(i) ? (code & ((1u << Layout::LOW) - 1u)) << Layout::lowBit(i) : 0u;
    if constexpr (Layout::HIGH) {
        if (k == Layout::LOW) bits |= ((code >> Layout::LOW) & 1u) << i;
    }
    return bits;
}

// Puts code i of a run (0 <= code < 2^BITS) into its BITS words, where its bits are still zero (an add:
// one instruction with the shift).
template <int BITS>
__device__ __forceinline__ void run_put(uint32_t (&w)[BITS], int i, uint32_t code) {
#pragma unroll
    for (int k = 0; k < BITS; k++) w[k] += run_word_bits<BITS>(k, i, code);
}

// Replaces code i of a run in its BITS words.
template <int BITS>
__device__ __forceinline__ void run_replace(uint32_t (&w)[BITS], int i, uint32_t code) {
    constexpr uint32_t ALL = (1u << BITS) - 1u;
#pragma unroll
    for (int k = 0; k < BITS; k++) w[k] = (w[k] & ~run_word_bits<BITS>(k, i, ALL)) | run_word_bits<BITS>(k, i, code);
}

// 2^e as fp32, exactly, for -126 <= e <= 127.
__device__ __forceinline__ float pow2(int e) {
    return __int_as_float((127 + e) << 23);
}

}  // namespace kvmix
