// The tensor-core products' tile layout (kernels/mma_tile.h) on the CPU, where no GPU runs the kernel:
// the mma.m16n8k8 and mma.m16n8k16 fragment layouts place every element once, a whole product assembled
// through either layout (tile by tile, slice by slice, round by round, as kernels/cuda/matvec.cuh walks
// it, each k-step an instruction's D = A B + C taken from the lanes' registers) equals the plain
// product, the byte permute makes uint8 codes fp16, and the tf32 and scaled fp16 splits of activations
// keep fp32 accuracy.
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

TEST(MmaTile, Fp16FragmentLayoutPlacesEveryElementOnce) {
  std::vector<int> a(16 * 16), b(16 * 8), load(16);
  for (int lane = 0; lane < 32; ++lane)
    for (int h = 0; h < 2; ++h) {
      for (int r = 0; r < 4; ++r) ++a[size_t(mma::a_row(lane, r) * 16 + mma::a16_k(lane, r, h))];
      for (int r = 0; r < 2; ++r) ++b[size_t(mma::b16_k(lane, r, h) * 8 + mma::b_col(lane))];
    }
  for (int n : a) EXPECT_EQ(n, 1);
  for (int n : b) EXPECT_EQ(n, 1);
  // The four k-steps of a load take each of its 16 elements once per row (2 rows: A registers r % 2).
  for (int j = 0; j < 4; ++j)
    for (int h = 0; h < 2; ++h) {
      for (int r = 0; r < 4; r += 2) ++load[size_t(mma::a16_element(j, r, h))];
      EXPECT_EQ(mma::a16_element(j, 0, h), mma::b16_element(j, 0, h));  // A and B agree on each k
      EXPECT_EQ(mma::a16_element(j, 2, h), mma::b16_element(j, 1, h));
    }
  for (int n : load) EXPECT_EQ(n, 1);
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

// y [T x rows] = x [T x cols] W^T through the kernel's layout, in double: mma.m16n8k8 steps (tf32), or
// with k16 mma.m16n8k16 steps (fp16, the uint8 products').
std::vector<double> product_through_tiles(const std::vector<double>& W, const std::vector<double>& x, int64_t rows, int64_t cols, int T, int E,
                                          int steps, bool k16 = false) {
  const mma::Slices sl = mma::slices(cols, E, steps);
  std::vector<double> y(size_t(T) * size_t(rows), std::nan(""));
  for (int64_t o0 = 0; o0 < rows; o0 += 16) {
    double total[32][4] = {};
    for (int slice = 0; slice < sl.splits; ++slice) {  // summed in slice order, as the block does
      const int64_t c_begin = mma::slice_begin(sl, slice, E), c_end = std::min(cols, mma::slice_begin(sl, slice + 1, E));
      double acc[32][4] = {};
      for (int64_t base = c_begin; base < c_end; base += steps * 4 * E)
        for (int u = 0; u < steps; ++u)
          for (int j = 0; j < (k16 ? E / 4 : E / 2); ++j) {
            const int K = k16 ? 16 : 8, halves = k16 ? 2 : 1;
            double A[16][16], B[16][8], D[16][8] = {};
            for (int lane = 0; lane < 32; ++lane) {
              const int64_t c = mma::load_column(base, u, lane % 4, E);
              for (int h = 0; h < halves; ++h) {
                for (int r = 0; r < 4; ++r) {
                  const int64_t row = std::min(rows - 1, o0 + mma::a_row(lane, r));
                  const int64_t col = c + (k16 ? mma::a16_element(j, r, h) : mma::a_element(j, r));
                  A[mma::a_row(lane, r)][k16 ? mma::a16_k(lane, r, h) : mma::a_k(lane, r)] = col < c_end ? W[size_t(row * cols + col)] : 0.0;
                }
                for (int r = 0; r < 2; ++r) {
                  const int tok = mma::b_col(lane);
                  const int64_t col = c + (k16 ? mma::b16_element(j, r, h) : mma::b_element(j, r));
                  B[k16 ? mma::b16_k(lane, r, h) : mma::b_k(lane, r)][mma::b_col(lane)] = col < c_end && tok < T ? x[size_t(tok * cols + col)] : 0.0;
                }
              }
            }
            for (int m = 0; m < 16; ++m)
              for (int n = 0; n < 8; ++n)
                for (int k = 0; k < K; ++k) D[m][n] += A[m][k] * B[k][n];
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
    for (int steps : {1, 2, 4})
      for (bool k16 : {false, true}) {
        if (k16 && s.E != 16) continue;  // fp16 k-steps are uint8's, whose loads are 16 codes
        const auto y = product_through_tiles(W, x, s.rows, s.cols, s.T, s.E, steps, k16);
        for (size_t i = 0; i < want.size(); ++i)
          ASSERT_NEAR(y[i], want[i], 1e-9) << s.rows << "x" << s.cols << " T " << s.T << " E " << s.E << " steps " << steps << " k16 " << k16
                                           << " row " << int64_t(i) % s.rows << " x row " << int64_t(i) / s.rows;
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

// The permute that makes codes fp16: each half of biased_code_pair(word, p) is 1024 + code 2p + h of
// the word, exactly, so subtracting 1024 leaves the code.
TEST(MmaTile, BiasedCodePairsAreTheCodesPlus1024InFp16) {
  EXPECT_EQ(fp16_to_float(uint16_t(mma::kF16Of1024Pair)), 1024.0f);
  EXPECT_EQ(mma::kF16Of1024Pair >> 16, mma::kF16Of1024Pair & 0xffffu);
  std::mt19937 g(5);
  for (int i = 0; i < 20000; ++i) {
    const uint32_t word = i < 256 ? uint32_t(i) * 0x01010101u : uint32_t(g());
    for (int p = 0; p < 2; ++p) {
      const uint32_t pair = mma::biased_code_pair(word, p);
      for (int h = 0; h < 2; ++h) {
        const float code = float(word >> (8 * (2 * p + h)) & 0xffu);
        ASSERT_EQ(fp16_to_float(uint16_t(pair >> (16 * h))), 1024.0f + code) << std::hex << word << " p " << p << " h " << h;
        ASSERT_EQ(fp16_to_float(float_to_fp16(1024.0f + code - 1024.0f)), code);
      }
    }
  }
}

// A uint8 product's activations: the row's scale brings its largest magnitude into [2^14, 2^15), hi + lo
// is the scaled value to 2^-22 of itself or 2^-25 absolute, each part times a code is exact in fp32,
// and the inverse scale restores the units exactly.
TEST(MmaTile, ScaledFp16PartsCarryFp32Accuracy) {
  EXPECT_EQ(mma::f16_scale_exponent(0.0f), 0);
  EXPECT_EQ(mma::f16_scale_exponent(INFINITY), 0);
  EXPECT_EQ(mma::f16_scale_exponent(NAN), 0);
  EXPECT_EQ(mma::f16_scale_exponent(1.0f), 14);
  EXPECT_EQ(mma::f16_scale_exponent(std::nextafter(2.0f, 0.0f)), 14);
  EXPECT_EQ(mma::f16_scale_exponent(65536.0f), -2);
  EXPECT_EQ(mma::f16_scale_exponent(std::numeric_limits<float>::max()), -113);
  EXPECT_EQ(mma::f16_scale_exponent(std::numeric_limits<float>::denorm_min()), 126);
  for (int k : {-113, -1, 0, 1, 14, 126}) EXPECT_EQ(double(mma::pow2(k)) * double(mma::pow2(-k)), 1.0) << k;
  std::mt19937 g(13);
  std::uniform_real_distribution<float> d(-1, 1);
  std::uniform_int_distribution<int> e(-40, 40), spread(0, 40);
  for (int row = 0; row < 2000; ++row) {
    const int top = e(g);
    std::vector<float> x(64);
    float peak = 0;
    for (auto& v : x) {
      v = std::ldexp(d(g), top - spread(g));
      peak = std::max(peak, std::fabs(v));
    }
    const int k = mma::f16_scale_exponent(peak);
    const float s = mma::pow2(k);
    ASSERT_GE(peak * s, 16384.0f) << peak;
    ASSERT_LT(peak * s, 32768.0f) << peak;
    for (float v : x) {
      const float scaled = v * s;
      ASSERT_EQ(double(scaled), std::ldexp(double(v), k));  // exact
      const mma::F16Parts p = mma::split_f16(scaled);
      const double hi = fp16_to_float(p.hi), lo = fp16_to_float(p.lo);
      ASSERT_LE(std::fabs(hi + lo - scaled), std::max(std::ldexp(std::fabs(double(scaled)), -22), std::ldexp(1.0, -25))) << v;
      const float code = float(row % 256);
      ASSERT_EQ(double(code * float(hi)), double(code) * hi);
      ASSERT_EQ(double(code * float(lo)), double(code) * lo);
      ASSERT_EQ(double(float(hi + lo) * mma::pow2(-k)), std::ldexp(double(float(hi + lo)), -k));
    }
  }
}

}  // namespace
}  // namespace skein::test
