// The tensor-core products' tile layout (kernels/mma_tile.h) on the CPU, where no GPU runs the kernel:
// the mma.m16n8k8 fragment layout places every element once, a whole product assembled through the
// layout (tile by tile, slice by slice, round by round, as kernels/cuda/matvec.cuh walks it, each k-step
// an instruction's D = A B + C taken from the lanes' registers) equals the plain product, and the tf32
// split of activations keeps fp32 accuracy.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/mma_tile.h"

namespace skein::test {
namespace {

TEST(MmaTile, FragmentLayoutPlacesEveryElementOnce) {
  std::vector<int> a(16 * 8), b(8 * 8), c(16 * 8);
  for (int lane = 0; lane < 32; ++lane) {
    for (int r = 0; r < 4; ++r) ++a[size_t(mma::a_row(lane, r) * 8 + mma::a_k(lane, r))];
    for (int r = 0; r < 2; ++r) ++b[size_t(mma::b_k(lane, r) * 8 + mma::b_col(lane))];
    for (int r = 0; r < 4; ++r) ++c[size_t(mma::c_row(lane, r) * 8 + mma::c_col(lane, r))];
  }
  for (int n : a) EXPECT_EQ(n, 1);
  for (int n : b) EXPECT_EQ(n, 1);
  for (int n : c) EXPECT_EQ(n, 1);
}

TEST(MmaTile, SlicesAreEvenRunsOfWholeSteps) {
  for (int steps : {1, 2, 4})
    for (int E : {8, 16})
      for (int64_t cols : {16, 64, 100, 264, 511, 512, 1024, 2064, 4096, 16384}) {
        const mma::Slices s = mma::slices(cols, E, steps);
        const int64_t step = 4 * E, round = steps * step;
        EXPECT_TRUE(s.splits == 1 || s.splits == 2 || s.splits == 4 || s.splits == 8) << cols;
        EXPECT_EQ(mma::slice_begin(s, 0, E), 0) << cols;
        EXPECT_GE(mma::slice_begin(s, s.splits, E), cols) << cols;
        EXPECT_LT(mma::slice_begin(s, s.splits, E) - cols, step) << cols;
        for (int i = 0; i < s.splits; ++i) {
          const int64_t n = mma::slice_begin(s, i + 1, E) - mma::slice_begin(s, i, E);
          EXPECT_EQ(n % step, 0) << cols << " slice " << i;
          EXPECT_GE(n, s.splits > 1 ? round : step) << cols << " slice " << i << ": short of a round";
          EXPECT_LE(n, mma::slice_begin(s, 1, E) + step) << cols << " slice " << i << ": uneven";
        }
      }
  // A 7B layer's rows, fp16 and uint8, at every round the products may run: every warp of a block on one tile.
  for (int steps : {1, 2, 4}) {
    EXPECT_EQ(mma::slices(4096, 8, steps).splits, 8);
    EXPECT_EQ(mma::slices(4096, 16, steps).splits, 8);
  }
}

// y [T x rows] = x [T x cols] W^T through the kernel's layout, in double.
std::vector<double> product_through_tiles(const std::vector<double>& W, const std::vector<double>& x, int64_t rows, int64_t cols, int T, int E,
                                          int steps) {
  const mma::Slices sl = mma::slices(cols, E, steps);
  std::vector<double> y(size_t(T) * size_t(rows), std::nan(""));
  for (int64_t o0 = 0; o0 < rows; o0 += 16) {
    double total[32][4] = {};
    for (int slice = 0; slice < sl.splits; ++slice) {  // summed in slice order, as the block does
      const int64_t c_begin = mma::slice_begin(sl, slice, E), c_end = std::min(cols, mma::slice_begin(sl, slice + 1, E));
      double acc[32][4] = {};
      for (int64_t base = c_begin; base < c_end; base += steps * 4 * E)
        for (int u = 0; u < steps; ++u)
          for (int j = 0; j < E / 2; ++j) {
            double A[16][8], B[8][8], D[16][8] = {};
            for (int lane = 0; lane < 32; ++lane) {
              const int64_t c = mma::load_column(base, u, lane % 4, E);
              for (int r = 0; r < 4; ++r) {
                const int64_t row = std::min(rows - 1, o0 + mma::a_row(lane, r)), col = c + mma::a_element(j, r);
                A[mma::a_row(lane, r)][mma::a_k(lane, r)] = col < c_end ? W[size_t(row * cols + col)] : 0.0;
              }
              for (int r = 0; r < 2; ++r) {
                const int tok = mma::b_col(lane);
                const int64_t col = c + mma::b_element(j, r);
                B[mma::b_k(lane, r)][mma::b_col(lane)] = col < c_end && tok < T ? x[size_t(tok * cols + col)] : 0.0;
              }
            }
            for (int m = 0; m < 16; ++m)
              for (int n = 0; n < 8; ++n)
                for (int k = 0; k < 8; ++k) D[m][n] += A[m][k] * B[k][n];
            for (int lane = 0; lane < 32; ++lane)
              for (int r = 0; r < 4; ++r) acc[lane][r] += D[mma::c_row(lane, r)][mma::c_col(lane, r)];
          }
      for (int lane = 0; lane < 32; ++lane)
        for (int r = 0; r < 4; ++r) total[lane][r] += acc[lane][r];
    }
    for (int lane = 0; lane < 32; ++lane)
      for (int r = 0; r < 4; ++r) {
        const int tok = mma::c_col(lane, r);
        const int64_t o = o0 + mma::c_row(lane, r);
        if (tok >= T || o >= rows) continue;
        EXPECT_TRUE(std::isnan(y[size_t(tok * rows + o)])) << "output " << tok << "," << o << " written twice";
        y[size_t(tok * rows + o)] = total[lane][r];
      }
  }
  return y;
}

// Shapes the GPU tests use and a 7B layer's: columns split over 1, 2, 4 and 8 warps with short last
// slices, widths below one step, rows short of a tile, 1 to 8 rows of x, the fp16 and uint8 load widths
// (8 and 16 elements), and a width that is not whole loads (element-wise loads).
TEST(MmaTile, ProductsThroughTheLayoutEqualPlainProducts) {
  struct Shape {
    int64_t rows, cols;
    int T, E;
  };
  for (Shape s : {Shape{70, 264, 1, 8}, {70, 264, 8, 8}, {70, 1032, 3, 8}, {45, 64, 8, 8}, {23, 32, 5, 8}, {70, 16, 2, 8}, {70, 100, 3, 8},
                  {70, 2064, 3, 16}, {70, 256, 7, 16}, {9, 256, 3, 16}, {30, 1024, 8, 16}, {40, 1040, 8, 16}, {16, 4096, 1, 8},
                  {17, 16384, 2, 8}}) {
    std::mt19937 g(unsigned(s.rows * 131 + s.cols * 7 + s.T));
    std::uniform_real_distribution<double> d(-1, 1);
    std::vector<double> W(size_t(s.rows * s.cols)), x(size_t(s.T * s.cols));
    for (auto& v : W) v = d(g);
    for (auto& v : x) v = d(g);
    std::vector<double> want(size_t(s.T * s.rows));
    for (int t = 0; t < s.T; ++t)
      for (int64_t o = 0; o < s.rows; ++o)
        for (int64_t i = 0; i < s.cols; ++i) want[size_t(t * s.rows + o)] += W[size_t(o * s.cols + i)] * x[size_t(t * s.cols + i)];
    for (int steps : {1, 2, 4}) {
      const auto y = product_through_tiles(W, x, s.rows, s.cols, s.T, s.E, steps);
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(y[i], want[i], 1e-9) << s.rows << "x" << s.cols << " T " << s.T << " E " << s.E << " steps " << steps << " row "
                                         << int64_t(i) % s.rows << " x row " << int64_t(i) / s.rows;
    }
  }
}

// The products' weight ring (mma::ring_*, as kernels/cuda/matvec.cuh runs it) played through with
// copies that land as late as the waits allow: every round is read from its slot after its copy
// landed, no copy is issued into a slot whose round has not been read, and every round is read once.
TEST(MmaTile, RingReadsEveryRoundAfterItLandsAndBeforeItIsOverwritten) {
  for (int stages : {2, 3, 4, 6, 8})
    for (int rounds : {0, 1, 2, 3, 4, 5, 8, 17}) {
      const std::string where = "stages " + std::to_string(stages) + ", rounds " + std::to_string(rounds);
      std::vector<int> held(size_t(stages), -1);       // the round last copied into each slot
      std::vector<bool> read(size_t(stages), true);    // whether that round has been read
      std::vector<int> group_of(size_t(rounds), -1);   // the commit group carrying each round
      int groups = 0, landed = 0, reads = 0;
      auto fill = [&](int r) {
        const int s = mma::ring_slot(r, stages);
        ASSERT_TRUE(read[size_t(s)]) << where << ": round " << r << " overwrites unread round " << held[size_t(s)];
        held[size_t(s)] = r, read[size_t(s)] = false, group_of[size_t(r)] = groups;
      };
      for (int r = 0; r < stages - 1; ++r) {
        if (r < rounds) fill(r);
        ++groups;
      }
      for (int r = 0; r < rounds; ++r) {
        landed = std::max(landed, groups - mma::ring_pending(stages));  // the wait: as few landed as it allows
        if (mma::ring_refill(r, stages) < rounds) fill(mma::ring_refill(r, stages));
        ++groups;
        const int s = mma::ring_slot(r, stages);
        ASSERT_EQ(held[size_t(s)], r) << where;
        ASSERT_LT(group_of[size_t(r)], landed) << where << ": round " << r << " read before its copy landed";
        read[size_t(s)] = true;
        ++reads;
      }
      EXPECT_EQ(reads, rounds) << where;
    }
}

// tf32 by cutting: the low 13 bits cleared, the value moved toward zero by less than 2^-10 of itself.
TEST(MmaTile, TruncateTf32ClearsTheLow13Bits) {
  const float ulp = std::ldexp(1.0f, -10);  // tf32's spacing at 1
  EXPECT_EQ(mma::truncate_tf32(1.0f + ulp / 2), 1.0f);
  EXPECT_EQ(mma::truncate_tf32(std::nextafter(1.0f + ulp, 2.0f)), 1.0f + ulp);
  EXPECT_EQ(mma::truncate_tf32(-(1.0f + ulp / 2)), -1.0f);  // toward zero on both sides
  EXPECT_EQ(mma::truncate_tf32(1.0f + ulp), 1.0f + ulp);
  EXPECT_TRUE(std::isinf(mma::truncate_tf32(INFINITY)));
  EXPECT_TRUE(std::isnan(mma::truncate_tf32(NAN)));
  std::mt19937 g(7);
  std::uniform_real_distribution<float> d(-1, 1);
  std::uniform_int_distribution<int> e(-60, 60);
  for (int i = 0; i < 100000; ++i) {
    const float x = std::ldexp(d(g), e(g)), r = mma::truncate_tf32(x);
    ASSERT_EQ(float_to_bits(r) & 0x1fffu, 0u) << x;
    ASSERT_LE(std::fabs(r), std::fabs(x)) << x;
    ASSERT_LT(std::fabs(double(r) - x), std::ldexp(std::fabs(double(x)), -10)) << x;
  }
}

// What the kernel multiplies in place of x: hi + lo is x to 2^-21 of its value, and each part times a
// weight that widens exactly to tf32 (fp16, bf16, a uint8 code) is exact in fp32, so a product's only
// rounding is its fp32 sums.
TEST(MmaTile, SplitActivationsCarryFp32Accuracy) {
  std::mt19937 g(11);
  std::uniform_real_distribution<float> d(-1, 1);
  std::uniform_int_distribution<int> e(-30, 30);
  for (int i = 0; i < 100000; ++i) {
    const float x = std::ldexp(d(g), e(g));
    const mma::Tf32Parts p = mma::split_tf32(x);
    ASSERT_EQ(mma::truncate_tf32(p.hi), p.hi);
    ASSERT_EQ(mma::truncate_tf32(p.lo), p.lo);
    ASSERT_LE(std::fabs((double(p.hi) + p.lo) - x), std::ldexp(std::fabs(double(x)), -21)) << x;
    const float w = fp16_to_float(float_to_fp16(d(g))), code = float(i % 256);
    ASSERT_EQ(double(w * p.hi), double(w) * p.hi) << w << " " << x;
    ASSERT_EQ(double(w * p.lo), double(w) * p.lo) << w << " " << x;
    ASSERT_EQ(double(code * p.hi), double(code) * p.hi) << code << " " << x;
  }
}

}  // namespace
}  // namespace skein::test
