// The layout of the CUDA products' tensor-core tiles (kernels/cuda/matvec.cuh) as plain functions that
// the CPU tests run too: what each lane of a warp hands to mma.m16n8k8 (tf32; fp16 and bf16 weights)
// or mma.m16n8k16 (fp16; uint8 codes), where the results land, how a product's columns are split over
// a block's warps, and how an activation becomes two tf32 or two fp16 parts. The kernel is written with these very functions; tests/test_mma_tile.cpp multiplies through
// them on the CPU, with the instruction's fragment layout below as its reference, and compares with a
// plain product.
#pragma once
#include <cstdint>

#include "kernels/numeric.h"

namespace skein::mma {

// mma.m16n8k8 with tf32 operands (PTX ISA, "Matrix Fragments for mma.m16n8k8"): D[16x8] += A[16x8] B[8x8]
// over k. Lane l is thread t = l % 4 of group g = l / 4.
//   A register r (0..3): row g + 8 (r % 2), k = t + 4 (r / 2).
//   B register r (0..1): k = t + 4 r, column g.
//   C register r (0..3): row g + 8 (r / 2), column 2 t + r % 2.
SKEIN_HD int a_row(int lane, int r) { return lane / 4 + 8 * (r % 2); }
SKEIN_HD int a_k(int lane, int r) { return lane % 4 + 4 * (r / 2); }
SKEIN_HD int b_k(int lane, int r) { return lane % 4 + 4 * r; }
SKEIN_HD int b_col(int lane) { return lane / 4; }
SKEIN_HD int c_row(int lane, int r) { return lane / 4 + 8 * (r / 2); }
SKEIN_HD int c_col(int lane, int r) { return 2 * (lane % 4) + r % 2; }

// The kernel's operands, with no shuffles: each lane loads 16 bytes (E elements) of tile rows
// a_row(lane, 0) and a_row(lane, 1) and the same columns of x row b_col(lane), and k-step j of that load
// takes A register r from element a_element(j, r) of row a_row(lane, r), B register r from element
// b_element(j, r). A's k = t + 4 (r / 2) and B's k = t + 4 r' name the same element when r' = r / 2, so
// A and B agree on which column sits at each k, which is all a sum over k needs.
SKEIN_HD int a_element(int j, int r) { return 2 * j + r / 2; }
SKEIN_HD int b_element(int j, int r) { return 2 * j + r; }

// Lane t's load of step u in a round starting at column `base`: the 4 lanes of a row side by side
// (64 contiguous bytes), steps one after another.
SKEIN_HD int64_t load_column(int64_t base, int u, int t, int E) { return base + int64_t(u) * 4 * E + int64_t(t) * E; }

// v cut to tf32 (a 10-bit mantissa): its low 13 bits cleared, toward zero. One bit operation on host
// and device alike, where the device's rounding conversion (cvt.rna.tf32.f32) is five instructions on
// sm_90; the products split every activation they multiply, and at batch 1 those conversions were half
// of the kernel's instructions (ncu, H200). An infinity stays one; a NaN's two parts still sum to NaN.
SKEIN_HD float truncate_tf32(float v) { return bits_to_float(float_to_bits(v) & ~0x1fffu); }
// An activation as the two tf32 parts the products multiply it in: hi is x cut to tf32, lo the rest
// (x - hi is exact in fp32) cut again, so hi + lo is x to 2^-21 of its value (the rest has at most 13
// significant bits and lo keeps 11), and each part times a tf32 weight is exact in fp32.
struct Tf32Parts {
  float hi, lo;
};
SKEIN_HD Tf32Parts split_tf32(float x) {
  const float hi = truncate_tf32(x);
  return {hi, truncate_tf32(x - hi)};
}

// uint8 products run on mma.m16n8k16 with fp16 operands instead: a code is exact in fp16, and k16
// takes a register pair per element pair, so a 16-byte load of codes is four instructions' worth of
// A with no widening to fp32 (kernels/cuda/matvec.cuh). Its fragments (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"), half h (0: the low 16 bits) of a register:
//   A register r (0..3): row g + 8 (r % 2) (a_row), k = 2 t + h + 8 (r / 2).
//   B register r (0..1): k = 2 t + h + 8 r, column g (b_col).
//   C as for m16n8k8 (c_row, c_col).
SKEIN_HD int a16_k(int lane, int r, int h) { return 2 * (lane % 4) + h + 8 * (r / 2); }
SKEIN_HD int b16_k(int lane, int r, int h) { return 2 * (lane % 4) + h + 8 * r; }
// k-step j (0..3) of a lane's 16-element load: A register r takes elements a16_element(j, r, h) of row
// a_row(lane, r) (bytes 2 (r / 2) + h of the load's word j), B register r elements b16_element(j, r, h) of
// x (halves word 2 j + r). A's k = 2t + h + 8 (r / 2) and B's k = 2t + h + 8 r' name the same element
// when r' = r / 2, as in the tf32 layout.
SKEIN_HD int a16_element(int j, int r, int h) { return 4 * j + 2 * (r / 2) + h; }
SKEIN_HD int b16_element(int j, int r, int h) { return 4 * j + 2 * r + h; }

// The byte permute of PTX's prmt (CUDA's __byte_perm): byte i of the result is byte s_i (selector
// nibble i, 0..7) of the eight bytes y:x.
SKEIN_HD uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, y, s);
#else
  const uint64_t v = uint64_t(y) << 32 | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= uint32_t(v >> (8 * ((s >> (4 * i)) & 7u)) & 0xffu) << (8 * i);
  return r;
#endif
}
// Codes 2p and 2p + 1 of a word of four as two fp16 values 1024 + q: 0x64 set above each code byte
// is fp16's exponent of 1024, the code its mantissa's low bits. One permute; the kernel's one
// subtract of 1024 from both halves (exact) leaves q.
constexpr uint32_t kF16Of1024Pair = 0x64006400u;
SKEIN_HD uint32_t biased_code_pair(uint32_t codes, int p) { return byte_perm(codes, 0x64646464u, p ? 0x5342u : 0x5140u); }

// Activations of a uint8 product in fp16 parts. fp16's range is narrow (2^-24 to 65504), so a row of
// x is first scaled by a power of two that brings its largest magnitude into [2^14, 2^15) (exact; the
// sums are scaled back by its inverse), then split like split_tf32 with rounding: hi = fp16(v),
// lo = fp16(v - hi). hi + lo is v to 2^-22 of its value, or 2^-25 absolute (2^-39 of the row's
// largest) where lo falls below fp16's normal range; each part times a code is exact in fp32.
SKEIN_HD int f16_scale_exponent(float max_abs) {
  const uint32_t bits = float_to_bits(max_abs) & 0x7fffffffu;
  const int e = int(bits >> 23);  // biased: max_abs is in [2^(e-127), 2^(e-126)) when e > 0
  if (bits == 0 || e == 255) return 0;  // zeros, infinities and NaNs are not scaled
  const int k = 141 - e;                // 14 - (e - 127)
  return k < 126 ? k : 126;             // below 2^-112 (subnormal too): 2^126, whose inverse is normal
}
SKEIN_HD float pow2(int k) { return bits_to_float(uint32_t(k + 127) << 23); }  // k in [-126, 127]
struct F16Parts {
  uint16_t hi, lo;  // fp16 bits
};
SKEIN_HD F16Parts split_f16(float v) {
  const uint16_t hi = float_to_fp16(v);
  return {hi, float_to_fp16(v - fp16_to_float(hi))};
}

constexpr int kWarps = 8;  // per block

// A product's columns over `splits` warps of a block (a power of two, at most kWarps): as many as leave
// each slice a round of loads or more (a round: `steps_per_round` loads of 4 lanes side by side per row). Its
// steps (the last one maybe short) are dealt out evenly, so the slices differ by a step at most.
struct Slices {
  int splits;
  int64_t steps;
};
SKEIN_HD Slices slices(int64_t cols, int E, int steps_per_round) {
  const int64_t step = 4 * int64_t(E), round = steps_per_round * step;
  int s = 1;
  while (s < kWarps && 2 * s * round <= cols) s *= 2;
  return {s, (cols + step - 1) / step};
}
// The first column of slice i (i = splits: the end of the last).
SKEIN_HD int64_t slice_begin(const Slices& s, int i, int E) { return s.steps * i / s.splits * 4 * int64_t(E); }

// A warp's ring of `stages` rounds of weights in shared memory, filled by asynchronous copies in one
// commit group per round, so group g is round g: rounds 0 .. stages - 2 before the loop, then at the
// top of iteration r, once round r has landed (at most stages - 2 groups still in flight), round
// r + stages - 1 into the slot round r - 1 was read from; then round r is read.
SKEIN_HD int ring_slot(int round, int stages) { return round % stages; }
SKEIN_HD int ring_refill(int round, int stages) { return round + stages - 1; }  // the round iteration `round` copies
SKEIN_HD constexpr int ring_pending(int stages) { return stages - 2; }  // groups left in flight by iteration r's wait

}  // namespace skein::mma
