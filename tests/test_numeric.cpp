// Number-format conversions shared by CPU and GPU code.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/numeric.h"
#include "kernels/rwkv_math.h"

namespace skein {
namespace {

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
    if (!std::isnan(f)) EXPECT_EQ(float_to_bf16(f), uint16_t(h));
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

}  // namespace
}  // namespace skein
