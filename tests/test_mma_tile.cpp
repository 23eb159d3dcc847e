// The tensor-core products' tile layout and operand form (kernels/mma_tile.h) on the CPU, where no GPU
// runs the kernel: the mma.m16n8k16 fragment layout places every element once, a row of x split into
// 16-bit parts keeps fp32 accuracy at any magnitude, and a whole product assembled through the layout
// (tile by tile, slice by slice, round by round, as kernels/cuda/linear.cu walks it, each instruction's
// D = A B + C taken from the lanes' registers) equals the plain product.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/mma_tile.h"

namespace skein::test {
namespace {

TEST(MmaTile, FragmentLayoutPlacesEveryElementOnce) {
  std::vector<int> a(16 * 16), b(16 * 8), c(16 * 8);
  for (int lane = 0; lane < 32; ++lane) {
    for (int r = 0; r < 4; ++r)
      for (int h = 0; h < 2; ++h) ++a[size_t(mma::a_row(lane, r) * 16 + mma::a_k(lane, r, h))];
    for (int r = 0; r < 2; ++r)
      for (int h = 0; h < 2; ++h) ++b[size_t(mma::b_k(lane, r, h) * 8 + mma::b_col(lane))];
    for (int r = 0; r < 4; ++r) ++c[size_t(mma::c_row(lane, r) * 8 + mma::c_col(lane, r))];
  }
  for (int n : a) EXPECT_EQ(n, 1);
  for (int n : b) EXPECT_EQ(n, 1);
  for (int n : c) EXPECT_EQ(n, 1);
}

// A lane's A and B operands name the same load element at the same k, and a load's instructions use
// each of its elements once per row.
TEST(MmaTile, OperandsAgreeOnEveryColumn) {
  for (int E : {8, 16}) {
    std::vector<int> used(size_t(2 * E));
    for (int m = 0; m < E / 4; ++m)
      for (int r = 0; r < 4; ++r)
        for (int h = 0; h < 2; ++h) {
          for (int lane = 0; lane < 32; ++lane) EXPECT_EQ(mma::a_k(lane, r, h), mma::b_k(lane, r / 2, h));
          EXPECT_EQ(mma::a_element(m, r, h), mma::b_element(m, r / 2, h));
          ++used[size_t((r % 2) * E + mma::a_element(m, r, h))];
        }
    for (int n : used) EXPECT_EQ(n, 1) << "E " << E;
  }
}

// A row's parts times 2^-e give back every value to about 2^-22 (values far below the row's largest
// to 2^-37 of it), whatever the magnitudes: past fp16's 65504, tiny, zero, negative.
template <bool kBf16>
void expect_split_rows_keep_fp32_accuracy() {
  std::mt19937 g(7);
  std::uniform_real_distribution<float> d(-1, 1);
  for (float magnitude : {1.0f, 7e4f, 3e9f, 1e-3f, 1e-30f}) {
    std::vector<float> row(300);
    for (auto& v : row) v = d(g) * magnitude;
    row[5] = 0.0f, row[6] = magnitude * 1e-9f, row[7] = -magnitude;
    float top = 0;
    for (float v : row) top = std::max(top, std::fabs(v));
    const int e = mma::row_exponent(top);
    EXPECT_LE(top * mma::pow2(e), 32768.0f) << magnitude;
    for (float v : row) {
      uint16_t p[mma::Parts<kBf16>::kCount];
      mma::split<kBf16>(v * mma::pow2(e), p);
      double sum = 0;
      for (uint16_t q : p) {
        const float part = mma::from_16<kBf16>(q);
        ASSERT_TRUE(std::isfinite(part)) << magnitude;
        sum += part;
      }
      ASSERT_NEAR(sum * mma::pow2(-e), v, std::fabs(v) * 0x1p-22 + double(top) * 0x1p-37) << (kBf16 ? "bf16 " : "fp16 ") << magnitude;
    }
  }
  EXPECT_EQ(mma::row_exponent(0.0f), 0);  // an all-zero row
  EXPECT_EQ(mma::row_exponent(std::numeric_limits<float>::quiet_NaN()), 0);
  uint16_t p[mma::Parts<kBf16>::kCount];
  mma::split<kBf16>(std::numeric_limits<float>::quiet_NaN(), p);
  EXPECT_TRUE(std::isnan(mma::from_16<kBf16>(p[0])));
}
TEST(MmaTile, SplitRowsKeepFp32AccuracyInFp16) { expect_split_rows_keep_fp32_accuracy<false>(); }
TEST(MmaTile, SplitRowsKeepFp32AccuracyInBf16) { expect_split_rows_keep_fp32_accuracy<true>(); }

TEST(MmaTile, SlicesAreEvenRunsOfWholeSteps) {
  for (int E : {8, 16})
    for (int64_t cols : {16, 64, 100, 264, 511, 512, 1024, 2064, 4096, 16384}) {
      const mma::Slices s = mma::slices(cols, E);
      const int64_t step = 4 * E, round = mma::kSteps * step;
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
  EXPECT_EQ(mma::slices(4096, 8).splits, 8);  // a 7B layer's rows: every warp of a block on one tile
}

// y [T x rows] = x [T x cols] W^T through the kernel's layout: each row of x scaled and split into
// parts (mma::split), every instruction's products summed in double, the scale undone at the end.
template <bool kBf16>
std::vector<double> product_through_tiles(const std::vector<double>& W, const std::vector<float>& x, int64_t rows, int64_t cols, int T, int E) {
  constexpr int kParts = mma::Parts<kBf16>::kCount;
  std::vector<float> parts(static_cast<size_t>(kParts * T * cols)), scale(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) {
    float top = 0;
    for (int64_t i = 0; i < cols; ++i) top = std::max(top, std::fabs(x[size_t(t * cols + i)]));
    const int e = mma::row_exponent(top);
    scale[size_t(t)] = mma::pow2(-e);
    for (int64_t i = 0; i < cols; ++i) {
      uint16_t p[kParts];
      mma::split<kBf16>(x[size_t(t * cols + i)] * mma::pow2(e), p);
      for (int k = 0; k < kParts; ++k) parts[size_t((k * T + t) * cols + i)] = mma::from_16<kBf16>(p[k]);
    }
  }
  const mma::Slices sl = mma::slices(cols, E);
  std::vector<double> y(size_t(T) * size_t(rows), std::nan(""));
  for (int64_t o0 = 0; o0 < rows; o0 += 16) {
    double total[32][4] = {};
    for (int slice = 0; slice < sl.splits; ++slice) {  // summed in slice order, as the block does
      const int64_t c_begin = mma::slice_begin(sl, slice, E), c_end = std::min(cols, mma::slice_begin(sl, slice + 1, E));
      double acc[32][4] = {};
      for (int64_t base = c_begin; base < c_end; base += mma::kSteps * 4 * E)
        for (int u = 0; u < mma::kSteps; ++u)
          for (int k = 0; k < kParts; ++k)
            for (int m = 0; m < E / 4; ++m) {
              double A[16][16], B[16][8], D[16][8] = {};
              for (int lane = 0; lane < 32; ++lane) {
                const int64_t c = mma::load_column(base, u, lane % 4, E);
                for (int r = 0; r < 4; ++r)
                  for (int h = 0; h < 2; ++h) {
                    const int64_t row = std::min(rows - 1, o0 + mma::a_row(lane, r)), col = c + mma::a_element(m, r, h);
                    A[mma::a_row(lane, r)][mma::a_k(lane, r, h)] = col < c_end ? W[size_t(row * cols + col)] : 0.0;
                  }
                for (int r = 0; r < 2; ++r)
                  for (int h = 0; h < 2; ++h) {
                    const int tok = mma::b_col(lane);
                    const int64_t col = c + mma::b_element(m, r, h);
                    B[mma::b_k(lane, r, h)][mma::b_col(lane)] = col < c_end && tok < T ? parts[size_t((k * T + tok) * cols + col)] : 0.0;
                  }
              }
              for (int i = 0; i < 16; ++i)
                for (int n = 0; n < 8; ++n)
                  for (int q = 0; q < 16; ++q) D[i][n] += A[i][q] * B[q][n];
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
        y[size_t(tok * rows + o)] = total[lane][r] * scale[size_t(tok)];
      }
  }
  return y;
}

// Shapes the GPU tests use and a 7B layer's: columns split over 1, 2, 4 and 8 warps with short last
// slices, widths below one step, rows short of a tile, 1 to 8 rows of x, the fp16 and uint8 load widths
// (8 and 16 elements), widths that are not whole loads (element-wise loads), and activations past
// fp16's range; fp16 parts and bf16 parts.
TEST(MmaTile, ProductsThroughTheLayoutEqualPlainProducts) {
  struct Shape {
    int64_t rows, cols;
    int T, E;
    float magnitude;
  };
  for (bool bf16 : {false, true})
    for (Shape s : {Shape{70, 264, 1, 8, 1}, {70, 264, 8, 8, 1e5}, {70, 1032, 3, 8, 1}, {45, 64, 8, 8, 1}, {23, 32, 5, 8, 1e-4}, {70, 16, 2, 8, 1},
                    {70, 100, 3, 8, 1}, {70, 2064, 3, 16, 3}, {70, 256, 7, 16, 1}, {9, 256, 3, 16, 1}, {30, 1024, 8, 16, 1}, {40, 1040, 8, 16, 1},
                    {16, 4096, 1, 8, 1}, {17, 16384, 2, 8, 1e6}}) {
      std::mt19937 g(unsigned(s.rows * 131 + s.cols * 7 + s.T));
      std::uniform_real_distribution<float> d(-1, 1);
      std::vector<double> W(size_t(s.rows * s.cols));
      std::vector<float> x(size_t(s.T * s.cols));
      // Weights as the kernel sees them: 16-bit values (uint8 codes are small integers).
      for (auto& v : W) v = s.E == 16 ? double(int(g() % 256)) : bf16 ? bf16_to_float(float_to_bf16(d(g))) : fp16_to_float(float_to_fp16(d(g)));
      for (auto& v : x) v = d(g) * s.magnitude;
      const auto y = bf16 ? product_through_tiles<true>(W, x, s.rows, s.cols, s.T, s.E) : product_through_tiles<false>(W, x, s.rows, s.cols, s.T, s.E);
      for (int t = 0; t < s.T; ++t)
        for (int64_t o = 0; o < s.rows; ++o) {
          double want = 0, size = 0;
          for (int64_t i = 0; i < s.cols; ++i) {
            want += W[size_t(o * s.cols + i)] * x[size_t(t * s.cols + i)];
            size += std::fabs(W[size_t(o * s.cols + i)] * x[size_t(t * s.cols + i)]);
          }
          ASSERT_NEAR(y[size_t(t * s.rows + o)], want, size * 0x1p-21)
              << (bf16 ? "bf16 " : "fp16 ") << s.rows << "x" << s.cols << " T " << s.T << " E " << s.E << " row " << o << " x row " << t;
        }
    }
}

}  // namespace
}  // namespace skein::test
