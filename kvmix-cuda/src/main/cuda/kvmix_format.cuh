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
// 3 bits, its bit 2 lives in word 2 at bit i.
#pragma once
#include <cstdint>

namespace kvmix {

constexpr int RUN = 32;  // codes per run along the pack axis

template <int BITS> struct BitPlanes;
template <> struct BitPlanes<1> { static constexpr int LOW = 1; static constexpr bool HIGH = false; };
template <> struct BitPlanes<2> { static constexpr int LOW = 2; static constexpr bool HIGH = false; };
template <> struct BitPlanes<3> { static constexpr int LOW = 2; static constexpr bool HIGH = true; };
template <> struct BitPlanes<4> { static constexpr int LOW = 4; static constexpr bool HIGH = false; };

// Code i of a run held in its BITS words (i is a compile-time constant after unrolling).
template <int BITS>
__device__ __forceinline__ uint32_t run_code(const uint32_t (&w)[BITS], int i) {
    constexpr int low = BitPlanes<BITS>::LOW;
    constexpr int perWord = 32 / low;
    uint32_t code = (w[i / perWord] >> (low * (i % perWord))) & ((1u << low) - 1u);
    if constexpr (BitPlanes<BITS>::HIGH) {
        code |= ((w[low] >> i) & 1u) << low;
    }
    return code;
}

// ORs code i of a run into its BITS words (which start at zero).
template <int BITS>
__device__ __forceinline__ void run_put(uint32_t (&w)[BITS], int i, uint32_t code) {
    constexpr int low = BitPlanes<BITS>::LOW;
    constexpr int perWord = 32 / low;
    w[i / perWord] |= (code & ((1u << low) - 1u)) << (low * (i % perWord));
    if constexpr (BitPlanes<BITS>::HIGH) {
        w[low] |= ((code >> low) & 1u) << i;
    }
}

// A small non-negative integer code as fp32 without the slow int->float conversion pipe:
// 0x4B000000 is 2^23, whose last mantissa bit is worth 1, so (2^23 | code) - 2^23 == code exactly.
__device__ __forceinline__ float code_to_float(uint32_t code) {
    return __int_as_float(0x4B000000u | code) - 8388608.0f;
}

}  // namespace kvmix
