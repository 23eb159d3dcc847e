// Scalar number formats shared by CPU and CUDA code. Everything is __host__ __device__ so the CPU tests
// exercise the very conversions the GPU kernels use.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SKEIN_HD __host__ __device__ __forceinline__
#else
#define SKEIN_HD inline
#endif

// Full unrolling where a GPU kernel fixes the trip count (so per-thread state arrays stay in registers).
#if defined(__CUDA_ARCH__)
#define SKEIN_UNROLL _Pragma("unroll")
#else
#define SKEIN_UNROLL
#endif

namespace skein {

SKEIN_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

SKEIN_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

// bf16 is the top half of an fp32: widening is exact.
SKEIN_HD float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// Round to nearest even, as torch's .to(bfloat16) does; NaN stays NaN.
SKEIN_HD uint16_t float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

SKEIN_HD float fp16_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    if (man == 0) return bits_to_float(sign);
    // Subnormal: value = man * 2^-24, exact in fp32.
    float v = float(man) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_float(sign | 0x7f800000u | (man << 13));
  return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// Round to nearest even with overflow to inf, as IEEE conversion does.
SKEIN_HD uint16_t float_to_fp16(float f) {
  uint32_t u = float_to_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return uint16_t(sign | 0x7e00u);
  if (absu >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (absu < 0x38800000u) {                                  // below the smallest normal half
    if (absu < 0x33000000u) return uint16_t(sign);           // rounds to zero
    uint32_t e = absu >> 23;
    uint32_t m = (absu & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;  // 14..24
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return uint16_t(sign | q);
  }
  uint32_t r = absu + 0xfffu + ((absu >> 13) & 1u);
  return uint16_t(sign | ((r - 0x38000000u) >> 13));
}

}  // namespace skein
