// The CPU products against a double-precision reference, for every weight dtype, odd sizes (vector
// tails), decode-sized and prefill-sized batches; and independence from the thread count.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "kernels/cpu/linear.h"
#include "kernels/numeric.h"
#include "kernels/product_output.h"
#include "model/quantize.h"
#include "worker/cpu_backend.h"

namespace skein {
namespace {

struct TestMatrix {
  std::vector<uint8_t> bytes;
  std::vector<double> values;  // exactly what the stored dtype represents
  Matrix m;
};

TestMatrix make_matrix(DType dt, int rows, int cols, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  TestMatrix t;
  t.bytes.resize(size_t(rows) * cols * dtype_size(dt));
  t.values.resize(size_t(rows) * cols);
  for (size_t i = 0; i < t.values.size(); ++i) {
    float f = d(g);
    if (dt == DType::F32) { std::memcpy(&t.bytes[4 * i], &f, 4); t.values[i] = f; }
    if (dt == DType::BF16) { uint16_t h = float_to_bf16(f); std::memcpy(&t.bytes[2 * i], &h, 2); t.values[i] = bf16_to_float(h); }
    if (dt == DType::F16) { uint16_t h = float_to_fp16(f); std::memcpy(&t.bytes[2 * i], &h, 2); t.values[i] = fp16_to_float(h); }
  }
  t.m.dtype = dt;
  t.m.rows = rows;
  t.m.cols = cols;
  t.m.data = t.bytes.data();
  return t;
}

class LinearTest : public ::testing::TestWithParam<std::tuple<DType, int>> {};

// Runs `check` once with each streaming kernel this CPU can run (AVX-512, AVX2, scalar), so a machine
// with AVX-512 also tests the kernels other machines use.
template <typename Check>
void for_each_simd_level(Check check) {
  const std::string best = cpu::simd_level();
  for (const char* level : {"avx512", "avx2", "scalar"}) {
    if (!cpu::set_simd_level(level)) continue;
    SCOPED_TRACE(level);
    check();
  }
  cpu::set_simd_level(best);
}

TEST_P(LinearTest, MatchesDoubleReference) {
  auto [dt, T] = GetParam();
  for_each_simd_level([&, dt = dt, T = T] {
  for (auto [rows, cols] : {std::pair{37, 45}, std::pair{130, 768}, std::pair{1031, 200}}) {
    TestMatrix w = make_matrix(dt, rows, cols, 7);
    std::mt19937 g(3);
    std::uniform_real_distribution<float> d(-1, 1);
    std::vector<float> x(size_t(T) * cols);
    for (auto& v : x) v = d(g);
    std::vector<float> y(size_t(T) * rows, NAN);
    cpu::linear(w.m, x.data(), cols, y.data(), rows, T);
    for (int t = 0; t < T; ++t)
      for (int o = 0; o < rows; ++o) {
        double s = 0;
        for (int i = 0; i < cols; ++i) s += w.values[size_t(o) * cols + i] * x[size_t(t) * cols + i];
        ASSERT_NEAR(y[size_t(t) * rows + o], s, 1e-4 * std::sqrt(double(cols))) << "t=" << t << " o=" << o << " " << rows << "x" << cols;
      }
  }
  });
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, LinearTest,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16, DType::F16), ::testing::Values(1, 2, 3, 4, 5, 9, 64)));

TEST(Linear, StreamingResultDoesNotDependOnThreadCount) {
  TestMatrix w = make_matrix(DType::BF16, 2048, 768, 11);  // large enough to be split across threads
  std::vector<float> x(768 * 3);
  std::mt19937 g(5);
  for (auto& v : x) v = std::uniform_real_distribution<float>(-1, 1)(g);
  int before = cpu::compute_threads();
  std::vector<float> y1(2048 * 3), y2(2048 * 3);
  cpu::set_compute_threads(1);
  cpu::linear_streaming(w.m, x.data(), 768, y1.data(), 2048, 3);
  cpu::set_compute_threads(2);
  cpu::linear_streaming(w.m, x.data(), 768, y2.data(), 2048, 3);
  cpu::set_compute_threads(before);
  EXPECT_EQ(y1, y2);
}

// Batch invariance at the kernel: a row of x gives the same products bit for bit whether it streams alone
// or with up to 12 others (groups of x rows, weight rows in L2-sized blocks, a single row's own kernel),
// with every kernel level.
TEST(Linear, EachRowStreamsToItsProductAlone) {
  std::vector<TestMatrix> mats;
  mats.push_back(make_matrix(DType::F32, 130, 768, 1));   // several L2 blocks
  mats.push_back(make_matrix(DType::BF16, 1031, 200, 2));
  mats.push_back(make_matrix(DType::F16, 37, 45, 3));     // vector tails
  mats.push_back(make_matrix(DType::F32, 300, 64, 4));
  mats.back().m = quantize_i8(mats.back().m, DType::F32);
  for_each_simd_level([&] {
  std::mt19937 g(9);
  std::uniform_real_distribution<float> d(-1, 1);
  for (const TestMatrix& w : mats) {
    const Matrix& m = w.m;
    for (int T : {2, 3, 4, 5, 8, 9, 13}) {
      std::vector<float> x(size_t(T) * size_t(m.cols)), y(size_t(T) * size_t(m.rows), NAN), alone(size_t(m.rows));
      for (auto& v : x) v = d(g);
      cpu::linear_streaming(m, x.data(), m.cols, y.data(), m.rows, T);
      for (int t = 0; t < T; ++t) {
        cpu::linear_streaming(m, x.data() + size_t(t) * size_t(m.cols), m.cols, alone.data(), m.rows, 1);
        ASSERT_EQ(std::vector<float>(y.begin() + t * m.rows, y.begin() + (t + 1) * m.rows), alone)
            << dtype_name(m.dtype) << " " << m.rows << "x" << m.cols << ", row " << t << " of " << T;
      }
    }
  }
  });
}

// A step's products in one parallel region (linears_streaming, Backend::linears) give each product's
// own result bit for bit, whatever the mix of dtypes and sizes (a LoRA factor's short rows, a matrix too
// small to split, uint8) and thread count; the backend's activated and added outputs too.
TEST(Linear, GroupedProductsEqualEachProductAlone) {
  std::vector<TestMatrix> mats;
  mats.push_back(make_matrix(DType::F32, 37, 45, 1));
  mats.push_back(make_matrix(DType::BF16, 1031, 200, 2));
  mats.push_back(make_matrix(DType::F16, 130, 768, 3));
  mats.push_back(make_matrix(DType::BF16, 768, 64, 4));
  TestMatrix wide = make_matrix(DType::F32, 513, 300, 5);
  mats.push_back(wide);
  mats.back().m = quantize_i8(wide.m, DType::F32);
  const int before = cpu::compute_threads();
  for (int threads : {1, 2})
    for (int T : {1, 3, 9}) {
      cpu::set_compute_threads(threads);
      std::mt19937 g{uint32_t(T)};
      std::uniform_real_distribution<float> d(-1, 1);
      std::vector<std::vector<float>> xs, alone, grouped;
      std::vector<cpu::StreamingProduct> products;
      for (const TestMatrix& w : mats) {
        xs.emplace_back(size_t(T) * size_t(w.m.cols));
        for (auto& v : xs.back()) v = d(g);
        alone.emplace_back(size_t(T) * size_t(w.m.rows), NAN);
        grouped.emplace_back(size_t(T) * size_t(w.m.rows), NAN);
      }
      for (size_t i = 0; i < mats.size(); ++i) {
        const Matrix& m = mats[i].m;
        cpu::linear_streaming(m, xs[i].data(), m.cols, alone[i].data(), m.rows, T);
        products.push_back({&m, xs[i].data(), m.cols, grouped[i].data(), m.rows});
      }
      cpu::linears_streaming(products.data(), int(products.size()), T);
      for (size_t i = 0; i < mats.size(); ++i) ASSERT_EQ(grouped[i], alone[i]) << "product " << i << ", T " << T << ", " << threads << " threads";

      CpuBackend be;  // stored, activated with a bias, added: as linear() gives each
      std::vector<float> base(size_t(T) * 1031);
      for (auto& v : base) v = d(g);
      std::vector<float> bias(1031, 0.25f);
      const ProductOutput outs[] = {ProductOutput{}, ProductOutput::activated(UnaryOp::V7Decay, bias.data()), ProductOutput::added(),
                                    ProductOutput::activated(UnaryOp::Sigmoid), ProductOutput{}};
      std::vector<std::vector<float>> one(mats.size()), together(mats.size());
      std::vector<Product> set;
      for (size_t i = 0; i < mats.size(); ++i) {
        const Matrix& m = mats[i].m;
        one[i] = together[i] = std::vector<float>(base.begin(), base.begin() + T * m.rows);
        be.linear(m, xs[i].data(), m.cols, one[i].data(), m.rows, T, outs[i]);
        set.push_back({&m, xs[i].data(), m.cols, together[i].data(), m.rows, outs[i]});
      }
      be.linears(set, T);
      for (size_t i = 0; i < mats.size(); ++i) ASSERT_EQ(together[i], one[i]) << "backend product " << i << ", T " << T << ", " << threads << " threads";
    }
  cpu::set_compute_threads(before);
}

// The backend's product outputs (an activation of the products, or the products added to y) equal the
// plain product followed by that pass, with y rows wider than the product (ldy > rows), decode and
// prefill sized, and rows longer than one of the activation's per-thread blocks.
TEST(Linear, BackendProductOutputsActivateWithBiasOrAddIntoStridedRows) {
  CpuBackend be;
  struct Shape { int rows, cols, ldy; };
  for (const Shape shape : {Shape{130, 200, 150}, Shape{4100, 8, 4110}})
  for (int T : {1, 70}) {
    const int rows = shape.rows, cols = shape.cols, ldy = shape.ldy;
    TestMatrix w = make_matrix(DType::F16, rows, cols, 11);
    std::mt19937 g(5);
    std::uniform_real_distribution<float> d(-1, 1);
    std::vector<float> x(size_t(T) * cols), base(size_t(T) * ldy);
    for (auto& v : x) v = d(g);
    for (auto& v : base) v = d(g);
    std::vector<float> plain = base, act = base, sum = base, biased = base, bias(rows);
    for (auto& v : bias) v = d(g);
    be.linear(w.m, x.data(), cols, plain.data(), ldy, T);
    be.linear(w.m, x.data(), cols, act.data(), ldy, T, ProductOutput::activated(UnaryOp::Silu));
    be.linear(w.m, x.data(), cols, sum.data(), ldy, T, ProductOutput::added());
    be.linear(w.m, x.data(), cols, biased.data(), ldy, T, ProductOutput::activated(UnaryOp::V7Decay, bias.data()));
    for (int t = 0; t < T; ++t)
      for (int o = 0; o < ldy; ++o) {
        size_t i = size_t(t) * ldy + size_t(o);
        if (o >= rows) {  // beyond the product's rows: untouched
          ASSERT_EQ(act[i], base[i]);
          ASSERT_EQ(sum[i], base[i]);
          ASSERT_EQ(biased[i], base[i]);
          continue;
        }
        ASSERT_EQ(act[i], math::silu(plain[i])) << "T " << T << " " << i;
        ASSERT_EQ(biased[i], math::v7_decay(plain[i] + bias[size_t(o)])) << "T " << T << " " << i;
        ASSERT_EQ(sum[i], base[i] + plain[i]) << "T " << T << " " << i;
      }
  }
}

}  // namespace
}  // namespace skein
