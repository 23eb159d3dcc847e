// Number-format conversions shared by CPU and GPU code.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
#include <limits>

#include "kernels/numeric.h"
#include "kernels/cpu/wkv7_head.h"
#include "kernels/rwkv_math.h"

namespace skein {
namespace {

// Uniform floats in [lo, hi) from a seeded LCG: the same inputs on every platform.
struct UniformFloats {
  uint32_t seed;
  float operator()(float lo, float hi) {
    seed = seed * 1664525u + 1013904223u;
    return lo + (hi - lo) * float(seed >> 8) / float(1 << 24);
  }
};

TEST(Numeric, Fp16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = fp16_to_float(uint16_t(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(f))));
      continue;
    }
    EXPECT_EQ(float_to_fp16(f), uint16_t(h)) << std::hex << h;
  }
}

TEST(Numeric, Fp16KnownValuesAndRounding) {
  EXPECT_EQ(fp16_to_float(0x3c00), 1.0f);
  EXPECT_EQ(fp16_to_float(0xc000), -2.0f);
  EXPECT_EQ(fp16_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(fp16_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(float_to_fp16(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie to even
  EXPECT_EQ(float_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -25)), 0x0000);            // tie to even (zero)
  EXPECT_EQ(float_to_fp16(std::ldexp(1.5f, -25)), 0x0001);
}

TEST(Numeric, Bf16IsTopHalfAndRoundsToNearestEven) {
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16(bits_to_float(0x3f808000)), 0x3f80);  // tie -> even
  EXPECT_EQ(float_to_bf16(bits_to_float(0x3f818000)), 0x3f82);
  EXPECT_EQ(float_to_bf16(bits_to_float(0x3f808001)), 0x3f81);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  for (uint32_t h = 0; h < 65536; h += 7) {
    float f = bf16_to_float(uint16_t(h));
    if (!std::isnan(f)) {
      EXPECT_EQ(float_to_bf16(f), uint16_t(h));
    }
  }
}

TEST(Math, Wkv4MatchesDirectFormula) {
  // From a zero state, y_0 = v_0 and the state holds exp(k) weights.
  float aa = 0, bb = 0, pp = -1e30f;
  float y0 = math::wkv4_step(-0.5f, 0.3f, 1.2f, 2.0f, aa, bb, pp);
  EXPECT_FLOAT_EQ(y0, 2.0f);
  float y1 = math::wkv4_step(-0.5f, 0.3f, 0.4f, -1.0f, aa, bb, pp);
  // y1 = (e^{k0} v0 + e^{u+k1} v1) / (e^{k0} + e^{u+k1}): decay applies from the next token on
  double a = std::exp(1.2), b = std::exp(0.3 + 0.4);
  EXPECT_NEAR(y1, (a * 2.0 + b * -1.0) / (a + b), 1e-6);
  float y2 = math::wkv4_step(-0.5f, 0.3f, 0.0f, 0.0f, aa, bb, pp);
  // then each earlier token's weight gains one decay w: e^{w+k0}, e^{k1}, and the bonus e^{u+k2}
  double a2 = std::exp(-0.5 + 1.2), b2 = std::exp(0.4), c2 = std::exp(0.3);
  EXPECT_NEAR(y2, (a2 * 2.0 + b2 * -1.0) / (a2 + b2 + c2), 1e-6);
}

TEST(Math, NormRowHasZeroMeanUnitVariance) {
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 100}, w[8], b[8], y[8];
  for (int i = 0; i < 8; ++i) { w[i] = 1; b[i] = 0; }
  math::norm_row(x, w, b, y, 8, 1e-5f);
  double s = 0, q = 0;
  for (float v : y) { s += v; q += double(v) * v; }
  EXPECT_NEAR(s / 8, 0.0, 1e-6);
  EXPECT_NEAR(q / 8, 1.0, 1e-4);
}

// The GPU kernels run one thread per v5/v6 value column and per v7 value row; those per-thread
// functions must compute bit for bit what the CPU's per-head loops compute.
TEST(Math, PerThreadWkvStepsAreBitwiseTheHeadSteps) {
  const int N = 64, T = 6;
  std::vector<float> r(T * N), k(T * N), v(T * N), w(T * N), u(N), kk(T * N), a(T * N);
  UniformFloats rnd{1};
  for (int i = 0; i < T * N; ++i) { r[i] = rnd(-1, 1); k[i] = rnd(-1, 1); v[i] = rnd(-1, 1); w[i] = rnd(0.3f, 0.99f); kk[i] = rnd(-0.3f, 0.3f); a[i] = rnd(0, 1); }
  for (int i = 0; i < N; ++i) u[i] = rnd(-0.5f, 0.5f);
  std::vector<float> S1(N * N, 0.1f), S2 = S1, y1(T * N), y2(T * N);
  for (int t = 0; t < T; ++t) {
    int o = t * N;
    math::wkv5_head_step(N, &r[o], &k[o], &v[o], &w[o], u.data(), S1.data(), &y1[o]);
    for (int j = 0; j < N; ++j) math::wkv5_column_step(N, j, &r[o], &k[o], &v[o], &w[o], u.data(), S2.data(), &y2[o]);
  }
  EXPECT_EQ(0, std::memcmp(S1.data(), S2.data(), S1.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)));
  std::vector<float> S3(N * N, 0.1f), S4 = S3;
  for (int t = 0; t < T; ++t) {
    int o = t * N;
    math::wkv7_head_step(N, &r[o], &w[o], &k[o], &v[o], &kk[o], &a[o], S3.data(), &y1[o]);
    for (int i = N - 1; i >= 0; --i) math::wkv7_row_step(N, i, &r[o], &w[o], &k[o], &v[o], &kk[o], &a[o], S4.data(), &y2[o]);  // any order
  }
  EXPECT_EQ(0, std::memcmp(S3.data(), S4.data(), S3.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)));
}

// The CPU's v7 recurrence (cpu::wkv7_head, rows in 16-float chunks) against math::wkv7_head_step, which
// defines its order: equal to float rounding (the compiler may fuse a multiply-add in one loop and not
// the other), for head sizes in whole chunks and not (the rest lane by lane), over several tokens.
TEST(Math, CpuWkv7HeadIsTheHeadStep) {
  for (const int N : {64, 96, 20, 7}) {
    const int T = 5;
    std::vector<float> r(T * N), w(T * N), k(T * N), v(T * N), kk(T * N), a(T * N);
    UniformFloats rnd{uint32_t(N)};
    for (int i = 0; i < T * N; ++i) { r[i] = rnd(-1, 1); k[i] = rnd(-1, 1); v[i] = rnd(-1, 1); w[i] = rnd(0.3f, 0.99f); kk[i] = rnd(-0.3f, 0.3f); a[i] = rnd(0, 1); }
    std::vector<float> S1(N * N), y1(T * N), y2(T * N);
    for (float& x : S1) x = rnd(-0.5f, 0.5f);
    std::vector<float> S2 = S1;
    for (int t = 0; t < T; ++t) {
      const int o = t * N;
      math::wkv7_head_step(N, &r[o], &w[o], &k[o], &v[o], &kk[o], &a[o], S1.data(), &y1[o]);
      cpu::wkv7_head(N, &r[o], &w[o], &k[o], &v[o], &kk[o], &a[o], S2.data(), &y2[o]);
    }
    for (size_t i = 0; i < S1.size(); ++i) ASSERT_NEAR(S1[i], S2[i], 1e-6f * std::max(1.0f, std::fabs(S1[i]))) << "N " << N << " S[" << i << "]";
    for (size_t i = 0; i < y1.size(); ++i) ASSERT_NEAR(y1[i], y2[i], 1e-5f * std::max(1.0f, std::fabs(y1[i]))) << "N " << N << " y[" << i << "]";
  }
}

TEST(Math, DequantU8IsTheOfficialFormula) {
  EXPECT_FLOAT_EQ(math::dequant_u8(0, 2.0f, 0.5f, 0.25f, -1.0f), ((0 + 0.5f) * 0.25f) * 2.0f - 1.0f + 0.5f);
  EXPECT_FLOAT_EQ(math::dequant_u8(255, 1.0f, 0.0f, 1.0f / 256, 0.0f), 255.5f / 256);
}

}  // namespace
}  // namespace skein
