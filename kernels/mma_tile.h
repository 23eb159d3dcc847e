// The layout of the CUDA products' tensor-core tiles (kernels/cuda/matvec.cuh) as plain functions that
// the CPU tests run too: what each lane of a warp hands to mma.m16n8k8 (tf32), where the results land,
// how a product's columns are split over a block's warps, and how an activation becomes two tf32
// parts. The kernel is written with these very functions; tests/test_mma_tile.cpp multiplies through
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
