// Packed code words of FORMAT.md section 3.1, the CUDA side of io.kvmix.core.quant.BitWidth:
// the one place in CUDA that knows how a width is split into bit planes.
//
//   bits | planes (width @ code bit)  | words per run of 32 codes
//   1    | 1-bit @ 0                  | 1
//   2    | 2-bit @ 0                  | 2
//   3    | 2-bit @ 0, then 1-bit @ 2  | 3   (low plane words 0-1, high plane word 2)
//   4    | 4-bit @ 0                  | 4
//
// Code i (0..31) of a run lives in low-plane word i / (32 / LOW) at bit LOW * (i % (32 / LOW)); for
// 3 bits, its bit 2 lives in word 2 at bit i (run_put writes it; fused_attention.cu's PlanePairs reads it).
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

// ORs code i of a run into its BITS words (which start at zero).
template <int BITS>
__device__ __forceinline__ void run_put(uint32_t (&w)[BITS], int i, uint32_t code) {
    constexpr int LOW = BitPlanes<BITS>::LOW;
    constexpr int PER_WORD = 32 / LOW;
    w[i / PER_WORD] |= (code & ((1u << LOW) - 1u)) << (LOW * (i % PER_WORD));
    if constexpr (BitPlanes<BITS>::HIGH) {
        w[LOW] |= ((code >> LOW) & 1u) << i;
    }
}

// Replaces code i of a run (words already holding a code there).
template <int BITS>
__device__ __forceinline__ void run_set(uint32_t (&w)[BITS], int i, uint32_t code) {
    constexpr int LOW = BitPlanes<BITS>::LOW;
    constexpr int PER_WORD = 32 / LOW;
    w[i / PER_WORD] &= ~(((1u << LOW) - 1u) << (LOW * (i % PER_WORD)));
    if constexpr (BitPlanes<BITS>::HIGH) {
        w[LOW] &= ~(1u << i);
    }
    run_put<BITS>(w, i, code);
}

// 2^e as fp32, exactly, for -126 <= e <= 127.
__device__ __forceinline__ float pow2(int e) {
    return __int_as_float((127 + e) << 23);
}

}  // namespace kvmix
