// CUDA kernels against their CPU references. Without a GPU every test skips with the reason.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/rwkv_math.h"

namespace skein {
namespace {

class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or found none)";
  }
  static std::vector<float> random(size_t n, float lo, float hi, uint32_t seed) {
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(g);
    return v;
  }
  struct Dev {
    float* p;
    size_t n;
    explicit Dev(const std::vector<float>& h) : p(cuda::alloc_floats(h.size())), n(h.size()) { cuda::upload(p, h.data(), n); }
    ~Dev() { cuda::free_floats(p); }
    std::vector<float> get() const { std::vector<float> h(n); cuda::download(h.data(), p, n); return h; }
  };
};

TEST_F(CudaKernels, LayerNormMatchesCpu) {
  const int T = 7, C = 768;
  auto x = random(size_t(T) * C, -3, 3, 1), w = random(C, 0.5f, 1.5f, 2), b = random(C, -0.2f, 0.2f, 3);
  std::vector<float> want(x.size());
  for (int t = 0; t < T; ++t) math::norm_row(&x[size_t(t) * C], w.data(), b.data(), &want[size_t(t) * C], C, 1e-5f);
  Dev dx(x), dw(w), db(b), dy(std::vector<float>(x.size()));
  cuda::layer_norm(dx.p, dw.p, db.p, dy.p, T, C);
  auto got = dy.get();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5) << i;
}

TEST_F(CudaKernels, Wkv7MatchesCpu) {
  const int T = 5, H = 2, N = 64, C = H * N;
  auto r = random(size_t(T) * C, -1, 1, 4), w = random(size_t(T) * C, 0.3f, 0.99f, 5), k = random(size_t(T) * C, -1, 1, 6);
  auto v = random(size_t(T) * C, -1, 1, 7), kk = random(size_t(T) * C, -0.2f, 0.2f, 8), a = random(size_t(T) * C, 0, 1, 9);
  std::vector<float> S(size_t(H) * N * N, 0.0f), y(size_t(T) * C);
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < T; ++t) {
      size_t i = size_t(t) * C + size_t(h) * N;
      math::wkv7_head_step(N, &r[i], &w[i], &k[i], &v[i], &kk[i], &a[i], &S[size_t(h) * N * N], &y[i]);
    }
  Dev dr(r), dw(w), dk(k), dv(v), dkk(kk), da(a), dS(std::vector<float>(S.size(), 0.0f)), dy(std::vector<float>(y.size()));
  cuda::Slice one{0, T, dS.p};
  auto* table = static_cast<cuda::Slice*>(cuda::alloc_bytes(sizeof one));
  cuda::upload_bytes(table, &one, sizeof one);
  cuda::wkv7(table, 1, H, N, dr.p, dw.p, dk.p, dv.p, dkk.p, da.p, dy.p);
  cuda::free_bytes(table);
  auto gy = dy.get(), gS = dS.get();
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(gy[i], y[i], 1e-4) << i;
  for (size_t i = 0; i < S.size(); ++i) ASSERT_NEAR(gS[i], S[i], 1e-4) << i;
}

TEST_F(CudaKernels, CublasLinearMatchesCpu) {
  const int rows = 96, cols = 80, T = 3;
  auto W = random(size_t(rows) * cols, -1, 1, 10), x = random(size_t(T) * cols, -1, 1, 11);
  Dev dW(W), dx(x), dy(std::vector<float>(size_t(T) * rows));
  cuda::linear_f32(dW.p, rows, cols, dx.p, dy.p, T);
  auto got = dy.get();
  for (int t = 0; t < T; ++t)
    for (int o = 0; o < rows; ++o) {
      double s = 0;
      for (int i = 0; i < cols; ++i) s += double(W[size_t(o) * cols + i]) * x[size_t(t) * cols + i];
      ASSERT_NEAR(got[size_t(t) * rows + o], s, 1e-3);
    }
}

}  // namespace
}  // namespace skein
