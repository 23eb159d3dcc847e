// The layout of the CUDA products' tensor-core tiles (kernels/cuda/linear.cu) and the form activations
// take there, as plain functions the CPU tests run too: what each lane of a warp hands to mma.m16n8k16
// (fp16 or bf16 operands, fp32 sums), where the results land, how a product's columns are split over a
// block's warps, and how a row of x becomes 16-bit parts at fp32 accuracy. The kernel is written with
// these very functions; tests/test_mma_tile.cpp multiplies through them on the CPU, with the
// instruction's fragment layout below as its reference, and compares with a plain product.
#pragma once
#include <cstdint>

#include "kernels/numeric.h"
#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace skein::mma {

// mma.m16n8k16 with 16-bit operands (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point
// type"): D[16x8] += A[16x16] B[16x8] over k. Lane l is thread t = l % 4 of group g = l / 4; a 32-bit
// register holds two elements, half h = 0 in its low 16 bits.
//   A register r (0..3), half h: row g + 8 (r % 2), k = 2t + h + 8 (r / 2).
//   B register r (0..1), half h: k = 2t + h + 8 r, column g.
//   C register r (0..3): row g + 8 (r / 2), column 2t + r % 2.
SKEIN_HD int a_row(int lane, int r) { return lane / 4 + 8 * (r % 2); }
SKEIN_HD int a_k(int lane, int r, int h) { return 2 * (lane % 4) + h + 8 * (r / 2); }
SKEIN_HD int b_k(int lane, int r, int h) { return 2 * (lane % 4) + h + 8 * r; }
SKEIN_HD int b_col(int lane) { return lane / 4; }
SKEIN_HD int c_row(int lane, int r) { return lane / 4 + 8 * (r / 2); }
SKEIN_HD int c_col(int lane, int r) { return 2 * (lane % 4) + r % 2; }

// The kernel's operands, with no shuffles: each lane loads 16 bytes (E weights, whose 16-bit forms
// fill E / 2 registers) of tile rows a_row(lane, 0) and a_row(lane, 1), and the same columns of its row
// b_col(lane) of x. Instruction m of a load (E / 4 of them) takes A register r from the row a_row(lane, r)
// at elements a_element(m, r, h), and B register r from x at b_element(m, r, h). A's k = 2t + h + 8q
// (q = r / 2) and B's k = 2t + h + 8r' name the same element when r' = q, so A and B agree on which
// column sits at each k, which is all a sum over k needs.
SKEIN_HD int a_element(int m, int r, int h) { return 4 * m + 2 * (r / 2) + h; }
SKEIN_HD int b_element(int m, int r, int h) { return 4 * m + 2 * r + h; }

// Lane t's load of step u in a round starting at column `base`: the 4 lanes of a row side by side
// (64 contiguous bytes), steps one after another.
SKEIN_HD int64_t load_column(int64_t base, int u, int t, int E) { return base + int64_t(u) * 4 * E + int64_t(t) * E; }

constexpr int kWarps = 8;  // per block
constexpr int kSteps = 4;  // loads per lane and row issued before any arithmetic (a round)

// A product's columns over `splits` warps of a block (a power of two, at most kWarps): as many as leave
// each slice a round of loads or more. Its `steps` (4 loads side by side, the last one maybe short)
// are dealt out evenly, so the slices differ by a step at most.
struct Slices {
  int splits;
  int64_t steps;
};
SKEIN_HD Slices slices(int64_t cols, int E) {
  const int64_t step = 4 * int64_t(E), round = kSteps * step;
  int s = 1;
  while (s < kWarps && 2 * s * round <= cols) s *= 2;
  return {s, (cols + step - 1) / step};
}
// The first column of slice i (i = splits: the end of the last).
SKEIN_HD int64_t slice_begin(const Slices& s, int i, int E) { return s.steps * i / s.splits * 4 * int64_t(E); }

// Activations at fp32 accuracy in 16-bit operands: a row of x is scaled by 2^e, the power of two that
// puts its largest magnitude in [2^14, 2^15) (inside fp16's range whatever the row holds; the residual
// stream's values can pass 65504), then written as parts, each the 16-bit rounding of what the parts
// before it left: fp16 in two (11 + 11 significant bits), bf16 in three (8 + 8 + 8). The parts sum to
// x 2^e within about 2^-22 of each value (a value below 2^-17 of its row's largest is carried to 2^-39
// of that largest), the products of parts and weights are exact, and a product's sums are scaled back
// by 2^-e exactly. A NaN stays NaN; an infinity makes its row's results infinite or NaN, as in fp32.
template <bool kBf16>
struct Parts {
  static constexpr int kCount = kBf16 ? 3 : 2;
};
// e for a row whose largest magnitude is max_abs, kept where 2^e and 2^-e are normal floats.
SKEIN_HD int row_exponent(float max_abs) {
  if (!(max_abs > 0.0f)) return 0;  // zeros (or NaN)
  const int e = int((float_to_bits(max_abs) >> 23) & 0xffu) - 127;  // max_abs in [2^e, 2^(e+1)); subnormals as 2^-127
  const int s = 14 - e;
  return s < -126 ? -126 : s > 126 ? 126 : s;
}
SKEIN_HD float pow2(int e) { return bits_to_float(uint32_t(e + 127) << 23); }  // e in [-126, 127]

// One 16-bit rounding and its exact widening. On the device the hardware's conversions, which round
// to nearest even as numeric.h's do.
template <bool kBf16>
SKEIN_HD uint16_t to_16(float v) {
#if defined(__CUDA_ARCH__)
  if constexpr (kBf16) return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  else return __half_as_ushort(__float2half_rn(v));
#else
  return kBf16 ? float_to_bf16(v) : float_to_fp16(v);
#endif
}
template <bool kBf16>
SKEIN_HD float from_16(uint16_t h) {
#if defined(__CUDA_ARCH__)
  if constexpr (kBf16) return __bfloat162float(__ushort_as_bfloat16(h));
  else return __half2float(__ushort_as_half(h));
#else
  return kBf16 ? bf16_to_float(h) : fp16_to_float(h);
#endif
}
// v (already scaled by 2^e) as its parts; each difference is exact in fp32.
template <bool kBf16>
SKEIN_HD void split(float v, uint16_t (&part)[Parts<kBf16>::kCount]) {
  SKEIN_UNROLL
  for (int p = 0; p < Parts<kBf16>::kCount; ++p) {
    part[p] = to_16<kBf16>(v);
    v -= from_16<kBf16>(part[p]);
  }
}

}  // namespace skein::mma
