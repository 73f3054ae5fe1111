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
// 3 bits, its bit 2 lives in word 2 at bit i (InPlace below spells this out; run_put writes it).
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

// Decoding for dot products, one logic op per code: code i of a run is masked where it lies inside its
// 16-bit half word and becomes the exact fp32 value code * 2^offset. 0x4B000000 is 2^23, whose last
// mantissa bit is worth 1, so (2^23 | bits) - 2^23 == bits for bits < 2^23. A run's words are first turned
// into *views* (each 16-bit half with those exponent bits ORed in, see view()), so that a single AND with
// (code mask | exponent) yields the float. Callers fold 2^-offset into the factor the code is multiplied
// by. For 3 bits the high plane is decoded the same way and weighs 4.
template <int BITS>
struct InPlace {
    static constexpr int LOW = BitPlanes<BITS>::LOW;
    static constexpr int PER_WORD = 32 / LOW;
    static constexpr bool HIGH = BitPlanes<BITS>::HIGH;
    static constexpr uint32_t EXPONENT = 0x4B000000u;

    __host__ __device__ static constexpr int lowWord(int i) { return i / PER_WORD; }
    __host__ __device__ static constexpr int lowBit(int i) { return LOW * (i % PER_WORD); }
    __host__ __device__ static constexpr int lowOffset(int i) { return lowBit(i) % 16; }
    __host__ __device__ static constexpr bool lowUpper(int i) { return lowBit(i) >= 16; }
    __host__ __device__ static constexpr int highOffset(int i) { return i % 16; }
    __host__ __device__ static constexpr bool highUpper(int i) { return i >= 16; }

    // Views of a run's words: lower[k] = word k | EXPONENT, upper[k] = (word k >> 16) | EXPONENT. The bits an
    // AND keeps (code mask below bit 16, EXPONENT) are then exactly the code's and the exponent's.
    __device__ __forceinline__ static void view(const uint32_t (&w)[BITS], uint32_t (&lower)[BITS], uint32_t (&upper)[BITS]) {
#pragma unroll
        for (int k = 0; k < BITS; k++) {
            lower[k] = w[k] | EXPONENT;
            upper[k] = (w[k] >> 16) | EXPONENT;
        }
    }

    // Low-plane part of code i times 2^lowOffset(i), from the views of its run.
    __device__ __forceinline__ static float low(const uint32_t (&lower)[BITS], const uint32_t (&upper)[BITS], int i) {
        const uint32_t half = lowUpper(i) ? upper[lowWord(i)] : lower[lowWord(i)];
        return __int_as_float(half & ((((1u << LOW) - 1u) << lowOffset(i)) | EXPONENT)) - TWO_POW_23;
    }

    // High-plane bit of code i (3 bits only) times 2^highOffset(i).
    __device__ __forceinline__ static float high(const uint32_t (&lower)[BITS], const uint32_t (&upper)[BITS], int i) {
        const uint32_t half = highUpper(i) ? upper[LOW] : lower[LOW];
        return __int_as_float(half & ((1u << highOffset(i)) | EXPONENT)) - TWO_POW_23;
    }
};

// ORs code i of a run into its BITS words (which start at zero).
template <int BITS>
__device__ __forceinline__ void run_put(uint32_t (&w)[BITS], int i, uint32_t code) {
    using Layout = InPlace<BITS>;
    w[Layout::lowWord(i)] |= (code & ((1u << Layout::LOW) - 1u)) << Layout::lowBit(i);
    if constexpr (Layout::HIGH) {
        w[Layout::LOW] |= ((code >> Layout::LOW) & 1u) << i;
    }
}

// 2^e as fp32, exactly, for -126 <= e <= 127.
__device__ __forceinline__ float pow2(int e) {
    return __int_as_float((127 + e) << 23);
}

}  // namespace kvmix
