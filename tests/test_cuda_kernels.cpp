// CUDA kernels against their CPU references. Without a GPU every test skips with the reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/product_sweep.h"
#include "coordinator/sampler.h"
#include "kernels/cuda/cublas_library.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/numeric.h"
#include "kernels/product_output.h"
#include "kernels/rwkv_math.h"
#include "kernels/sampling_math.h"

namespace skein {
namespace {

// cuBLAS is opened at first use, not linked (kernels/cuda/cublas_library.h): the library of the toolkit
// Skein was built with opens, GPU or not, and has every call Skein makes.
TEST(CublasLibrary, OpensWithEveryCallSkeinMakes) {
  const cuda::CublasLibrary& c = cuda::cublas();
  EXPECT_TRUE(c.create && c.set_stream && c.set_workspace && c.gemm_ex && c.sgemm);
  EXPECT_EQ(&cuda::cublas(), &c) << "opened once";
}

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
  // A batch table on the device.
  struct Table {
    cuda::Slice* p;
    explicit Table(const std::vector<cuda::Slice>& s) : p(static_cast<cuda::Slice*>(cuda::alloc_bytes(s.size() * sizeof(cuda::Slice)))) {
      cuda::upload_bytes(p, s.data(), s.size() * sizeof(cuda::Slice));
    }
    ~Table() { cuda::free_bytes(p); }
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

// A prompt longer than the kernel's ring of token inputs (8 tokens), so every stage is refilled: in one
// launch and token by token (as decode steps run it).
TEST_F(CudaKernels, Wkv7MatchesCpu) {
  const int T = 37, H = 2, N = 64, C = H * N;
  auto r = random(size_t(T) * C, -1, 1, 4), w = random(size_t(T) * C, 0.3f, 0.99f, 5), k = random(size_t(T) * C, -1, 1, 6);
  auto v = random(size_t(T) * C, -1, 1, 7), kk = random(size_t(T) * C, -0.2f, 0.2f, 8), a = random(size_t(T) * C, 0, 1, 9);
  std::vector<float> S(size_t(H) * N * N, 0.0f), y(size_t(T) * C);
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < T; ++t) {
      size_t i = size_t(t) * C + size_t(h) * N;
      math::wkv7_head_step(N, &r[i], &w[i], &k[i], &v[i], &kk[i], &a[i], &S[size_t(h) * N * N], &y[i]);
    }
  for (bool stepwise : {false, true}) {
    Dev dr(r), dw(w), dk(k), dv(v), dkk(kk), da(a), dS(std::vector<float>(S.size(), 0.0f)), dy(std::vector<float>(y.size()));
    for (int t = 0; t < (stepwise ? T : 1); ++t) {
      Table table({stepwise ? cuda::Slice{t, 1, dS.p} : cuda::Slice{0, T, dS.p}});
      cuda::wkv7(table.p, 1, H, N, dr.p, dw.p, dk.p, dv.p, dkk.p, da.p, dy.p);
    }
    auto gy = dy.get(), gS = dS.get();
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(gy[i], y[i], 1e-4) << (stepwise ? "stepwise " : "") << i;
    for (size_t i = 0; i < S.size(); ++i) ASSERT_NEAR(gS[i], S[i], 1e-4) << (stepwise ? "stepwise " : "") << i;
  }
}

// Two sequences of different lengths in one launch, for the register kernel (N = 64) and the general
// one (N = 32); v5 with a fixed decay and v6 with a per-token one.
TEST_F(CudaKernels, BatchedWkv5AndWkv7MatchCpuForEveryHeadSize) {
  for (int N : {64, 32}) {
    const int H = 3, C = H * N, lens[2] = {4, 1}, T = lens[0] + lens[1];
    auto r = random(size_t(T) * C, -1, 1, 20), w = random(size_t(T) * C, 0.3f, 0.99f, 21), k = random(size_t(T) * C, -1, 1, 22);
    auto v = random(size_t(T) * C, -1, 1, 23), kk = random(size_t(T) * C, -0.2f, 0.2f, 24), a = random(size_t(T) * C, 0, 1, 25);
    auto u = random(C, -0.5f, 0.5f, 26), S0 = random(2 * size_t(H) * N * N, -0.5f, 0.5f, 27);
    for (int gen : {5, 6, 7}) {
      std::vector<float> S = S0, y(size_t(T) * C);
      int off = 0;
      for (int b = 0; b < 2; ++b) {
        for (int t = 0; t < lens[b]; ++t)
          for (int h = 0; h < H; ++h) {
            size_t i = size_t(off + t) * C + size_t(h) * N, o = size_t(b) * H * N * N + size_t(h) * N * N;
            if (gen == 7) math::wkv7_head_step(N, &r[i], &w[i], &k[i], &v[i], &kk[i], &a[i], &S[o], &y[i]);
            else math::wkv5_head_step(N, &r[i], &k[i], &v[i], gen == 6 ? &w[i] : &w[size_t(h) * N], &u[size_t(h) * N], &S[o], &y[i]);
          }
        off += lens[b];
      }
      Dev dr(r), dw(w), dk(k), dv(v), dkk(kk), da(a), du(u), dS(S0), dy(std::vector<float>(y.size()));
      Table table({{0, lens[0], dS.p}, {lens[0], lens[1], dS.p + size_t(H) * N * N}});
      if (gen == 7) cuda::wkv7(table.p, 2, H, N, dr.p, dw.p, dk.p, dv.p, dkk.p, da.p, dy.p);
      else cuda::wkv5(table.p, 2, H, N, dr.p, dk.p, dv.p, gen == 6 ? dw.p : nullptr, gen == 6 ? nullptr : dw.p, du.p, dy.p);
      auto gy = dy.get(), gS = dS.get();
      for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(gy[i], y[i], 1e-4) << "v" << gen << " N " << N << " y " << i;
      for (size_t i = 0; i < S.size(); ++i) ASSERT_NEAR(gS[i], S[i], 1e-4) << "v" << gen << " N " << N << " S " << i;
    }
  }
}

// Token shift over sequences longer than one block of tokens, and a one-token one, in one launch.
TEST_F(CudaKernels, TokenShiftOverLongAndShortSequences) {
  const int C = 96, lens[3] = {150, 1, 64}, T = lens[0] + lens[1] + lens[2];
  auto xx = random(size_t(T) * C, -1, 1, 60), state = random(3 * size_t(C), -1, 1, 61);
  std::vector<float> want_sx(xx.size()), want_state = state;
  int off = 0;
  for (int b = 0; b < 3; ++b) {
    for (int c = 0; c < C; ++c) {
      want_sx[size_t(off) * C + c] = state[size_t(b) * C + c];
      for (int t = 1; t < lens[b]; ++t) want_sx[size_t(off + t) * C + c] = xx[size_t(off + t - 1) * C + c];
      want_state[size_t(b) * C + c] = xx[size_t(off + lens[b] - 1) * C + c];
    }
    off += lens[b];
  }
  Dev dxx(xx), dsx(std::vector<float>(xx.size())), dstate(state);
  Table table({{0, lens[0], dstate.p}, {lens[0], lens[1], dstate.p + C}, {lens[0] + lens[1], lens[2], dstate.p + 2 * C}});
  cuda::token_shift(dxx.p, dsx.p, table.p, 3, C, 150);
  EXPECT_EQ(dsx.get(), want_sx);
  EXPECT_EQ(dstate.get(), want_state);
}

// The fused layer norm + token shift + mixes (one launch) against the CPU's three steps, over
// sequences of several tokens, one token and none in one launch, with one mix and with six.
TEST_F(CudaKernels, NormShiftMixMatchesNormThenShiftThenMix) {
  for (int n_mix : {1, 6})
    for (int C : {768, 96}) {
      const std::vector<int> lens = {5, 1, 0, 3};
      const int B = int(lens.size()), T = 9;
      auto x = random(size_t(T) * C, -3, 3, 100 + C), w = random(size_t(C), 0.5f, 1.5f, 101), b = random(size_t(C), -0.2f, 0.2f, 102),
           state = random(size_t(B) * C, -1, 1, 103);
      std::vector<std::vector<float>> m;
      for (int k = 0; k < n_mix; ++k) m.push_back(random(size_t(C), 0, 1, 104 + k));
      // CPU: xx, then sx and the states, then each mix.
      std::vector<float> xx(x.size()), sx(x.size()), want_state = state;
      for (int t = 0; t < T; ++t) math::norm_row(&x[size_t(t) * C], w.data(), b.data(), &xx[size_t(t) * C], C, 1e-5f);
      std::vector<cuda::Slice> host_table;
      Dev dstate(state);
      for (int q = 0, off = 0; q < B; off += lens[size_t(q)], ++q) {
        host_table.push_back({off, lens[size_t(q)], dstate.p + size_t(q) * C});
        for (int i = 0; i < lens[size_t(q)]; ++i)
          for (int c = 0; c < C; ++c)
            sx[size_t(off + i) * C + c] = i == 0 ? state[size_t(q) * C + c] : xx[size_t(off + i - 1) * C + c];
        if (lens[size_t(q)] > 0)
          for (int c = 0; c < C; ++c) want_state[size_t(q) * C + c] = xx[size_t(off + lens[size_t(q)] - 1) * C + c];
      }
      Table table(host_table);
      Dev dx(x), dw(w), db(b);
      std::vector<std::unique_ptr<Dev>> dm, dout;
      cuda::Mixes mixes;
      for (int k = 0; k < n_mix; ++k) {
        dm.push_back(std::make_unique<Dev>(m[size_t(k)]));
        dout.push_back(std::make_unique<Dev>(std::vector<float>(x.size())));
        mixes.mix[mixes.count++] = {dm.back()->p, nullptr, dout.back()->p};
      }
      cuda::norm_shift_mix(dx.p, dw.p, db.p, table.p, B, mixes, T, C);
      auto got_state = dstate.get();
      for (size_t i = 0; i < got_state.size(); ++i) ASSERT_NEAR(got_state[i], want_state[i], 1e-5) << "C " << C << " state " << i;
      for (int k = 0; k < n_mix; ++k) {
        auto got = dout[size_t(k)]->get();
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_NEAR(got[i], math::delta_mix(xx[i], sx[i], m[size_t(k)][i % size_t(C)]), 1e-5) << "C " << C << " mix " << k << " element " << i;
      }
    }
}

// v7's fused attention output (ln_x, bonus, gate; a warp per head) and value residual against the
// CPU's per-head functions, for head sizes 64 and 32, and 16 and 96 (lanes without a value).
TEST_F(CudaKernels, V7OutputAndValueResidualMatchCpu) {
  for (int N : {64, 32, 16, 96}) {
    const int T = 3, H = 4, C = H * N;
    auto y = random(size_t(T) * C, -2, 2, 90), r = random(size_t(T) * C, -1, 1, 91), k = random(size_t(T) * C, -1, 1, 92);
    auto v = random(size_t(T) * C, -1, 1, 93), g = random(size_t(T) * C, 0, 1, 94), lw = random(C, 0.5f, 1.5f, 95), lb = random(C, -0.2f, 0.2f, 96);
    auto rk = random(C, -1, 1, 97), vf = random(size_t(T) * C, -1, 1, 98), gate = random(size_t(T) * C, -3, 3, 99), v0 = random(C, -1, 1, 100);
    std::vector<float> want = y, want_v = v;
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) {
        size_t o = size_t(t) * C + size_t(h) * N, w = size_t(h) * N;
        math::v7_output_head(N, &want[o], &r[o], &k[o], &v[o], &g[o], &lw[w], &lb[w], &rk[w]);
      }
    for (size_t i = 0; i < want_v.size(); ++i) want_v[i] = math::v7_value_residual(v[i], vf[i], gate[i], v0[i % size_t(C)]);
    Dev dy(y), dr(r), dk(k), dv(v), dg(g), dlw(lw), dlb(lb), drk(rk), dvf(vf), dgate(gate), dv0(v0);
    cuda::v7_output(dy.p, dr.p, dk.p, dv.p, dg.p, dlw.p, dlb.p, drk.p, T, H, N);
    cuda::v7_value_residual(dv.p, dvf.p, dgate.p, dv0.p, T, C);
    auto got = dy.get(), got_v = dv.get();
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5) << "N " << N << " y " << i;
    for (size_t i = 0; i < got_v.size(); ++i) ASSERT_NEAR(got_v[i], want_v[i], 1e-6) << "N " << N << " v " << i;
  }
}

TEST_F(CudaKernels, V7KeysMatchCpu) {
  for (int N : {64, 32, 16, 96}) {  // 16 and 96: lanes without a value
    const int T = 5, H = 3, C = H * N;
    auto k = random(size_t(T) * C, -2, 2, 110), a = random(size_t(T) * C, 0, 1, 111), kk0 = random(size_t(T) * C, -9, 9, 112);
    auto k_k = random(C, 0.5f, 1.5f, 113), k_a = random(C, 0, 1, 114);
    std::fill(k.begin(), k.begin() + N, 0.0f);  // a zero head: F.normalize's 1e-12 floor
    std::vector<float> want_k = k, want_kk = kk0;
    for (int g = 0; g < T * H; ++g) {
      size_t o = size_t(g) * N, w = size_t(g % H) * N;
      math::v7_keys_head(N, &want_k[o], &want_kk[o], &a[o], &k_k[w], &k_a[w]);
    }
    Dev dk(k), dkk(kk0), da(a), dk_k(k_k), dk_a(k_a);
    cuda::v7_keys(dk.p, dkk.p, da.p, dk_k.p, dk_a.p, T, H, N);
    auto got_k = dk.get(), got_kk = dkk.get();
    for (size_t i = 0; i < got_k.size(); ++i) {
      ASSERT_NEAR(got_kk[i], want_kk[i], 1e-6) << "N " << N << " kk " << i;
      ASSERT_NEAR(got_k[i], want_k[i], 1e-6) << "N " << N << " k " << i;
    }
  }
}

// v7's attention after its products, against the CPU's per-head functions in the backend's order: a
// decode step (one token per sequence: one launch at head size 64, its 3000 heads more than any GPU
// holds blocks at once, so each block takes several in turn) and a prompt's chunks (four launches), at
// the first layer (v_first = v) and a later one (the value residual); y, the states and v_first.
TEST_F(CudaKernels, V7AttentionMatchesCpuInOneLaunchAndInFour) {
  for (int N : {64, 32})
    for (bool decode : {true, false})
      for (bool first_layer : {true, false}) {
        const std::vector<int> lens = decode ? std::vector<int>(1000, 1) : std::vector<int>{5, 1, 9};
        const int H = 3, C = H * N, B = int(lens.size());
        int T = 0;
        for (int n : lens) T += n;
        const size_t TC = size_t(T) * C, HNN = size_t(H) * N * N;
        auto r = random(TC, -1, 1, 120), w = random(TC, 0.3f, 0.99f, 121), k = random(TC, -2, 2, 122), v = random(TC, -1, 1, 123);
        auto a = random(TC, 0, 1, 124), g = random(TC, 0, 1, 125), gate = random(TC, -3, 3, 126), vf0 = random(TC, -1, 1, 127);
        auto k_k = random(C, 0.5f, 1.5f, 128), k_a = random(C, 0, 1, 129), v0 = random(C, -1, 1, 130), lw = random(C, 0.5f, 1.5f, 131);
        auto lb = random(C, -0.2f, 0.2f, 132), rk = random(C, -1, 1, 133), S0 = random(size_t(B) * HNN, -0.5f, 0.5f, 134);
        // The CPU, sequence by sequence, head by head, token by token.
        std::vector<float> ck = k, cv = v, ckk(TC), cvf = vf0, cS = S0, cy(TC);
        int off = 0;
        for (int b = 0; b < B; ++b) {
          for (int h = 0; h < H; ++h)
            for (int t = 0; t < lens[size_t(b)]; ++t) {
              const size_t i = size_t(off + t) * C + size_t(h) * N, o = size_t(h) * N;
              math::v7_keys_head(N, &ck[i], &ckk[i], &a[i], &k_k[o], &k_a[o]);
              for (int n = 0; n < N; ++n) {
                if (first_layer) cvf[i + n] = cv[i + n];
                else cv[i + n] = math::v7_value_residual(cv[i + n], cvf[i + n], gate[i + n], v0[o + size_t(n)]);
              }
              math::wkv7_head_step(N, &r[i], &w[i], &ck[i], &cv[i], &ckk[i], &a[i], &cS[size_t(b) * HNN + size_t(h) * N * N], &cy[i]);
              math::v7_output_head(N, &cy[i], &r[i], &ck[i], &cv[i], &g[i], &lw[o], &lb[o], &rk[o]);
            }
          off += lens[size_t(b)];
        }
        Dev dr(r), dw(w), dk(k), dv(v), da(a), dg(g), dgate(gate), dvf(vf0), dk_k(k_k), dk_a(k_a), dv0(v0), dlw(lw), dlb(lb), drk(rk);
        const std::vector<float> zeros(TC, 0.0f);
        // The sequences' states in reverse order: the table, not the rows, says where each one is.
        std::vector<float> S0_reversed(S0.size());
        for (int b = 0; b < B; ++b) std::copy_n(S0.begin() + long(size_t(b) * HNN), HNN, S0_reversed.begin() + long(size_t(B - 1 - b) * HNN));
        Dev dkk(zeros), dS(S0_reversed), dy(zeros);
        std::vector<cuda::Slice> slices;
        off = 0;
        for (int b = 0; b < B; ++b) {
          slices.push_back({off, lens[size_t(b)], dS.p + size_t(B - 1 - b) * HNN});
          off += lens[size_t(b)];
        }
        Table table(slices);
        const cuda::V7AttentionArgs in{dr.p, dw.p, da.p, dg.p, dk.p, dv.p, dkk.p, dvf.p, first_layer ? nullptr : dgate.p,
                                       dk_k.p, dk_a.p, dv0.p, dlw.p, dlb.p, drk.p};
        cuda::v7_attention(table.p, B, H, N, in, dy.p, T, decode);
        auto gy = dy.get(), gS = dS.get(), gvf = dvf.get();
        const std::string what = "N " + std::to_string(N) + (decode ? " decode" : " prompt") + (first_layer ? " first layer" : " later layer");
        for (size_t i = 0; i < TC; ++i) ASSERT_NEAR(gy[i], cy[i], 1e-4) << what << " y " << i;
        for (int b = 0; b < B; ++b)
          for (size_t i = 0; i < HNN; ++i) ASSERT_NEAR(gS[size_t(B - 1 - b) * HNN + i], cS[size_t(b) * HNN + i], 1e-4) << what << " S " << b << " " << i;
        for (size_t i = 0; i < TC; ++i) ASSERT_EQ(gvf[i], cvf[i]) << what << " v_first " << i;
      }
}

TEST_F(CudaKernels, GroupNormMatchesCpu) {
  for (int N : {64, 16, 96}) {  // 16 and 96: lanes without a value
    const int T = 3, H = 5;
    auto x = random(size_t(T) * H * N, -4, 4, 30), w = random(size_t(H) * N, 0.5f, 1.5f, 31), b = random(size_t(H) * N, -0.2f, 0.2f, 32);
    std::vector<float> want(x.size());
    for (int g = 0; g < T * H; ++g)
      math::norm_row(&x[size_t(g) * N], &w[size_t(g % H) * N], &b[size_t(g % H) * N], &want[size_t(g) * N], N, 64e-5f);
    Dev dx(x), dw(w), db(b);
    cuda::group_norm(dx.p, dw.p, db.p, T, H, N);
    auto got = dx.get();
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5) << "N " << N << " " << i;
  }
}

// The uint8 product (factored tensor-core kernel up to 8 rows of x, vector and scalar loads; beyond
// that dequantized fp16 tiles through GemmEx) against the official element formula in double. Widths of
// whole 16-byte loads (2064: columns split over 8 warps, the last slice short; 256, one warp; 32, two
// loads, so most of a warp's lanes have none) and not (100); 70 rows is not a multiple of a warp's 16;
// 4200 x 1040 takes two dequantized tiles (16 codes per load; ProductsLaunchedTogetherEqualProductsAlone
// has a large width that is not whole loads). Up to 8 rows, rows of x far above and below fp16's range
// check the kernel's per-row scaling of its fp16 activations.
TEST_F(CudaKernels, Uint8ProductsMatchTheOfficialFormula) {
  for (auto [rows, cols] : {std::pair{70, 2064}, {70, 256}, {70, 32}, {70, 100}, {4200, 1040}}) {
    std::mt19937 g(40);
    std::vector<uint8_t> q(size_t(rows) * cols);
    for (auto& b : q) b = uint8_t(g() & 255u);
    auto rx = random(rows, 0.001f, 0.01f, 41), mx = random(rows, -0.05f, 0.05f, 42), ry = random(cols, 0.5f, 1.5f, 43),
         my = random(cols, -0.05f, 0.05f, 44);
    void* dq = cuda::alloc_bytes(q.size());
    cuda::upload_bytes(dq, q.data(), q.size());
    Dev drx(rx), dmx(mx), dry(ry), dmy(my);
    for (int T : {1, 3, 8, 20}) {
      auto x = random(size_t(T) * cols, -1, 1, 45 + T);
      const float kMagnitudes[] = {1.0f, 3e5f, 2e-6f};  // the official package's fp16 would overflow or underflow the last two
      auto magnitude = [&](int t) { return T <= 8 ? kMagnitudes[t % 3] : 1.0f; };
      for (int t = 0; t < T; ++t)
        for (int i = 0; i < cols; ++i) x[size_t(t) * cols + i] *= magnitude(t);
      Dev dx(x), dy(std::vector<float>(size_t(T) * rows));
      cuda::linear(dq, cuda::WeightType::U8, drx.p, dmx.p, dry.p, dmy.p, rows, cols, dx.p, cols, dy.p, rows, T);
      auto got = dy.get();
      for (int t = 0; t < T; ++t)
        for (int o = 0; o < rows; ++o) {
          double s = 0;
          for (int i = 0; i < cols; ++i)
            s += double(math::dequant_u8(q[size_t(o) * cols + i], rx[size_t(o)], mx[size_t(o)], ry[size_t(i)], my[size_t(i)])) * x[size_t(t) * cols + i];
          // Through GemmEx the fp16 roundings of weights and activations add up as a random walk: sqrt(cols).
          ASSERT_NEAR(got[size_t(t) * rows + o], s, T > 8 ? 2e-2 * std::sqrt(cols / 256.0) : 1e-3 * magnitude(t))
              << "cols " << cols << " T " << T << " row " << o;
        }
    }
    cuda::free_bytes(dq);
  }
}

// fp16 and bf16 products: the tensor-core kernel up to 8 rows of x (activations in two tf32 parts,
// fp32 accuracy at any magnitude: x up to 1e5, past fp16's range; 16-byte loads, and scalar loads for
// odd widths or misaligned activations) and beyond that GemmEx (activations rounded to the weight
// type), against the widened weights in double. Widths: columns split over 8 warps (1032) and 2 (264),
// both with a short last slice; one warp's (64, like a LoRA factor; 16, one load for half the lanes);
// scalar loads (100). 70 rows is not a multiple of a warp's 16; activations one float off 16-byte
// alignment (skew).
TEST_F(CudaKernels, HalfProductsMatchWidenedWeights) {
  for (bool bf16 : {false, true}) {
    for (auto [rows, cols] : {std::pair{70, 1032}, {70, 264}, {70, 64}, {70, 16}, {70, 100}, {2100, 1032}}) {
      auto wf = random(size_t(rows) * cols, -1, 1, 70);
      std::vector<uint16_t> w(wf.size());
      std::vector<float> wide(wf.size());
      for (size_t i = 0; i < w.size(); ++i) {
        w[i] = bf16 ? float_to_bf16(wf[i]) : float_to_fp16(wf[i]);
        wide[i] = bf16 ? bf16_to_float(w[i]) : fp16_to_float(w[i]);
      }
      void* dw = cuda::alloc_bytes(w.size() * 2);
      cuda::upload_bytes(dw, w.data(), w.size() * 2);
      for (int T : {1, 3, 8, 12})
        for (int skew : {0, 1}) {  // skew 1: rows of x one float apart from 16-byte alignment
          const int64_t ldx = cols + skew;
          const float scale = T <= 8 && skew ? 1e5f : 1.0f;  // GemmEx rounds x to fp16: not past its range
          auto x = random(size_t(T) * size_t(ldx) + size_t(skew), -scale, scale, 71 + T);
          Dev dx(x), dy(std::vector<float>(size_t(T) * rows));
          cuda::linear(dw, bf16 ? cuda::WeightType::BF16 : cuda::WeightType::F16, nullptr, nullptr, nullptr, nullptr, rows, cols,
                       dx.p + skew, ldx, dy.p, rows, T);
          auto got = dy.get();
          // Through GemmEx the activations' roundings add up as a random walk: sqrt(cols).
          const double tol = T > 8 ? (bf16 ? 0.1 : 2e-2) * std::sqrt(cols / 264.0) : 1e-3 * scale;
          for (int t = 0; t < T; ++t)
            for (int o = 0; o < rows; ++o) {
              double s = 0;
              for (int i = 0; i < cols; ++i) s += double(wide[size_t(o) * cols + i]) * x[size_t(skew) + size_t(t) * size_t(ldx) + size_t(i)];
              ASSERT_NEAR(got[size_t(t) * rows + o], s, tol) << (bf16 ? "bf16" : "fp16") << " cols " << cols << " T " << T << " skew " << skew;
            }
        }
      cuda::free_bytes(dw);
    }
  }
}

// A product's output options (activation, adding to y) give what a separate pass over the stored
// products gives, in the tensor-core kernel (2 rows of x) and cuBLAS (12 rows), for fp16 and fp32
// weights.
TEST_F(CudaKernels, ProductOutputsActivateWithBiasOrAdd) {
  const int rows = 8000, cols = 264;
  auto wf = random(size_t(rows) * cols, -0.2f, 0.2f, 80);
  std::vector<uint16_t> w16(wf.size());
  for (size_t i = 0; i < wf.size(); ++i) w16[i] = float_to_fp16(wf[i]);
  Dev d32(wf);
  void* d16 = cuda::alloc_bytes(w16.size() * 2);
  cuda::upload_bytes(d16, w16.data(), w16.size() * 2);
  for (bool half : {true, false})
    for (int T : {2, 12}) {
      const void* W = half ? d16 : static_cast<const void*>(d32.p);
      const auto type = half ? cuda::WeightType::F16 : cuda::WeightType::F32;
      auto x = random(size_t(T) * cols, -1, 1, 81), base = random(size_t(T) * rows, -1, 1, 82), bias = random(rows, -1, 1, 83);
      Dev dx(x), plain(std::vector<float>(base.size())), act(std::vector<float>(base.size())), sum(base), biased(base), dbias(bias);
      auto product = [&](float* y, ProductOutput out) { cuda::linear(W, type, nullptr, nullptr, nullptr, nullptr, rows, cols, dx.p, cols, y, rows, T, out); };
      product(plain.p, {});
      product(act.p, ProductOutput::activated(UnaryOp::Tanh));
      product(sum.p, ProductOutput::added());
      product(biased.p, ProductOutput::activated(UnaryOp::Sigmoid, dbias.p));
      auto p = plain.get(), a = act.get(), s = sum.get(), b = biased.get();
      for (size_t i = 0; i < p.size(); ++i) {
        ASSERT_NEAR(a[i], std::tanh(p[i]), 1e-5) << (half ? "fp16" : "fp32") << " T " << T << " " << i;
        ASSERT_NEAR(b[i], math::sigmoid(p[i] + bias[i % rows]), 1e-6) << (half ? "fp16" : "fp32") << " T " << T << " " << i;
        ASSERT_NEAR(s[i], base[i] + p[i], 1e-5) << (half ? "fp16" : "fp32") << " T " << T << " " << i;
      }
    }
  cuda::free_bytes(d16);
}

// Products launched together (cuda::linears: one tensor-core launch per weight format and load
// width, at most 8 products each) give exactly what each product gives alone: more fp16 products than
// one launch takes, odd widths (scalar loads), two products of one input, uint8 and bf16 beside them,
// fp32 through cuBLAS, every output option, at decode batch sizes and beyond (through cuBLAS, inputs
// rounded in one launch).
TEST_F(CudaKernels, ProductsLaunchedTogetherEqualProductsAlone) {
  struct Weights {
    cuda::WeightType type = cuda::WeightType::F16;
    int64_t rows = 0, cols = 0;
    void* W = nullptr;
    std::unique_ptr<Dev> rx, mx, ry, my, bias;
  };
  std::vector<Weights> ws;
  std::mt19937 g(90);
  auto add = [&](cuda::WeightType type, int64_t rows, int64_t cols) {
    Weights w;
    w.type = type;
    w.rows = rows;
    w.cols = cols;
    const size_t n = size_t(rows) * size_t(cols);
    auto f = random(n, -0.3f, 0.3f, g());
    if (type == cuda::WeightType::U8) {
      std::vector<uint8_t> q(n);
      for (auto& b : q) b = uint8_t(g() & 255u);
      w.W = cuda::alloc_bytes(n);
      cuda::upload_bytes(w.W, q.data(), n);
      w.rx = std::make_unique<Dev>(random(size_t(rows), 0.001f, 0.01f, g()));
      w.mx = std::make_unique<Dev>(random(size_t(rows), -0.05f, 0.05f, g()));
      w.ry = std::make_unique<Dev>(random(size_t(cols), 0.5f, 1.5f, g()));
      w.my = std::make_unique<Dev>(random(size_t(cols), -0.05f, 0.05f, g()));
    } else if (type == cuda::WeightType::F32) {
      w.W = cuda::alloc_bytes(n * 4);
      cuda::upload_bytes(w.W, f.data(), n * 4);
    } else {
      std::vector<uint16_t> h(n);
      for (size_t i = 0; i < n; ++i) h[i] = type == cuda::WeightType::BF16 ? float_to_bf16(f[i]) : float_to_fp16(f[i]);
      w.W = cuda::alloc_bytes(n * 2);
      cuda::upload_bytes(w.W, h.data(), n * 2);
    }
    w.bias = std::make_unique<Dev>(random(size_t(rows), -1, 1, g()));
    ws.push_back(std::move(w));
  };
  for (int i = 0; i < 10; ++i) add(cuda::WeightType::F16, 17 + 13 * i, i == 3 ? 100 : 264);
  add(cuda::WeightType::BF16, 40, 264);
  add(cuda::WeightType::U8, 70, 256);
  add(cuda::WeightType::U8, 20, 100);
  add(cuda::WeightType::U8, 9, 256);
  add(cuda::WeightType::F32, 30, 80);
  add(cuda::WeightType::F16, 45, 64);  // narrow rows: fewer loads than a warp's lanes
  add(cuda::WeightType::BF16, 23, 32);
  add(cuda::WeightType::U8, 30, 1024);  // columns split over 4 warps, beside uint8 products of one warp
  // Large products: two fp16 products of one input, and uint8 over several dequantized tiles.
  const size_t large = ws.size();
  add(cuda::WeightType::F16, 8000, 264);
  add(cuda::WeightType::F16, 8000, 264);
  add(cuda::WeightType::U8, 16400, 264);
  for (int T : {1, 3, 8, 12}) {
    std::vector<std::unique_ptr<Dev>> xs, together, alone;
    std::vector<cuda::LinearJob> jobs;
    for (size_t i = 0; i < ws.size(); ++i) {
      const Weights& w = ws[i];
      xs.push_back(std::make_unique<Dev>(random(size_t(T) * size_t(w.cols), -1, 1, g())));
      auto base = random(size_t(T) * size_t(w.rows), -1, 1, g());
      together.push_back(std::make_unique<Dev>(base));
      alone.push_back(std::make_unique<Dev>(base));
      ProductOutput out;
      switch (i % 4) {
        case 1: out = ProductOutput::activated(UnaryOp::Tanh); break;
        case 2: out = ProductOutput::activated(UnaryOp::Sigmoid, w.bias->p); break;
        case 3: out = ProductOutput::added(); break;
        default: break;
      }
      const bool u8 = w.type == cuda::WeightType::U8;
      // Two products of one input, small and large (the large pair's input rounded once beyond 8 rows).
      const float* x = i == 5 ? xs[4]->p : i == large + 1 ? xs[large]->p : xs[i]->p;
      jobs.push_back({w.W, w.type, u8 ? w.rx->p : nullptr, u8 ? w.mx->p : nullptr, u8 ? w.ry->p : nullptr, u8 ? w.my->p : nullptr, w.rows,
                      w.cols, x, w.cols, together[i]->p, w.rows, out});
    }
    cuda::linears(jobs.data(), int(jobs.size()), T);
    for (size_t i = 0; i < jobs.size(); ++i) {
      cuda::LinearJob j = jobs[i];
      cuda::linear(j.W, j.type, j.rx, j.mx, j.ry, j.my, j.rows, j.cols, j.x, j.ldx, alone[i]->p, j.ldy, T, j.out);
    }
    for (size_t i = 0; i < jobs.size(); ++i) {
      auto a = together[i]->get(), b = alone[i]->get();
      for (size_t e = 0; e < a.size(); ++e) ASSERT_NEAR(a[e], b[e], T > 8 ? 1e-5 : 0.0) << "product " << i << " T " << T << " element " << e;
    }
  }
  for (auto& w : ws) cuda::free_bytes(w.W);
}

// The product sweep's depths on small shapes (split over 1 to 8 warps, a tile short of 16 rows, 1 to
// 8 rows of x): each at fp32 accuracy, and the depths with the products' steps per round bit for bit
// the products' results (the ring's depth moves no arithmetic).
TEST_F(CudaKernels, ProductSweepDepthsAgree) {
  const std::vector<ProductShape> shapes = {{"fp16", 300, 1024, 1}, {"fp16", 70, 264, 8}, {"fp16", 33, 4096, 5}, {"uint8", 300, 2048, 3},
                                            {"uint8", 45, 256, 8}};
  const auto rows = sweep_products(0, shapes, 2);
  int products = 0, product_steps = 0;
  for (const ProductSweepRow& r : rows)
    if (r.product) product_steps = r.steps;
  for (const ProductSweepRow& r : rows) {
    const std::string where = r.shape.format + " " + std::to_string(r.shape.rows) + "x" + std::to_string(r.shape.cols) + " T " +
                              std::to_string(r.shape.T) + " " + r.kernel;
    EXPECT_GT(r.gb_s, 0) << where;
    if (r.kernel == "read") continue;
    products += r.product;
    EXPECT_LT(r.max_error, 1e-5) << where;
    if (r.steps == product_steps) {
      EXPECT_TRUE(r.same_as_product) << where;
    }
  }
  EXPECT_EQ(products, int(shapes.size()));
}

// The official top-p cutoff accumulates the sorted probabilities in float32 (the CPU reference does
// too); the GPU sums masses in double. Where the two sums cross top_p at different probabilities the
// cutoffs legitimately differ, so such rows are not compared.
std::vector<float> host_penalized(const std::vector<float>& logits, int row, int V, const SampleRequest& r) {
  std::vector<float> l(logits.begin() + long(size_t(row) * V), logits.begin() + long(size_t(row + 1) * V));
  for (auto& p : r.penalties) l[size_t(p.token)] = std::isinf(p.amount) ? -INFINITY : l[size_t(p.token)] - p.amount;
  return l;
}
bool top_p_is_ambiguous(const std::vector<float>& logits, const SampleRequest& r) {
  if (r.temperature == 0.0f || r.top_p >= 1.0f) return false;
  // The softmax both implementations compute before the cutoff.
  float mx = -INFINITY;
  for (float l : logits) mx = std::max(mx, l);
  double sum = 0;
  std::vector<float> p;
  for (float l : logits) sum += p.emplace_back(math::softmax_numerator(l, mx));
  for (auto& q : p) q = math::normalized(q, sum);
  std::sort(p.begin(), p.end(), std::greater<float>());
  float fcum = 0;
  double dcum = 0;
  float f_cut = p[0], d_cut = p[0];
  bool f_done = false, d_done = false;
  for (float q : p) {
    fcum += q;
    dcum += q;
    if (!f_done && fcum >= r.top_p) { f_cut = q; f_done = true; }
    if (!d_done && dcum >= double(r.top_p)) { d_cut = q; d_done = true; }
  }
  return f_cut != d_cut;
}

// GPU sampling draws the CPU reference's token (coordinator/sampler.cpp sample_row) for the same
// logits and uniform: greedy, top-p, top-k with tied probabilities, temperatures, penalties and bans.
TEST_F(CudaKernels, SamplingMatchesCpuReference) {
  for (int V : {256, 65536}) {
    std::vector<SampleRequest> reqs;
    std::mt19937_64 g(50);
    std::uniform_real_distribution<double> U(0, 1);
    for (float temp : {0.0f, 1.0f, 0.7f, 1.5f})
      for (float top_p : {0.0f, 0.5f, 0.85f, 1.0f})
        for (int top_k : {0, 1, 5, 40}) {
          SampleRequest r;
          r.temperature = temp;
          r.top_p = top_p;
          r.top_k = top_k;
          r.u = U(g);
          r.penalties = {{3, 0.5f}, {7, INFINITY}, {int32_t(V - 1), 1.25f}};
          reqs.push_back(r);
        }
    const int n = int(reqs.size());
    std::vector<float> logits = random(size_t(n) * V, -4, 4, 51);
    for (int i = 0; i < n; ++i)  // ties: the same value at several ids, some among the largest
      for (int j : {10, 20, 30, 40}) logits[size_t(i) * V + size_t(j)] = 6.0f;
    std::vector<int32_t> want(static_cast<size_t>(n));
    {
      std::vector<float> host = logits;
      for (int i = 0; i < n; ++i) want[size_t(i)] = sample_row(host.data() + size_t(i) * V, V, reqs[size_t(i)]);
    }
    std::vector<cuda::SampleRow> rows;
    std::vector<cuda::Penalty> pens;
    for (auto& r : reqs) {
      int begin = int(pens.size());
      for (auto& p : r.penalties) pens.push_back({p.token, p.amount});
      rows.push_back({r.temperature, r.top_p, r.top_k, begin, int(pens.size()), r.u});
    }
    Dev dl(logits), probs(std::vector<float>(logits.size()));
    void* drows = cuda::alloc_bytes(rows.size() * sizeof rows[0]);
    void* dpens = cuda::alloc_bytes(pens.size() * sizeof pens[0]);
    void* dtok = cuda::alloc_bytes(size_t(n) * sizeof(int32_t));
    cuda::upload_bytes(drows, rows.data(), rows.size() * sizeof rows[0]);
    cuda::upload_bytes(dpens, pens.data(), pens.size() * sizeof pens[0]);
    cuda::sample(dl.p, n, V, static_cast<cuda::SampleRow*>(drows), static_cast<cuda::Penalty*>(dpens), probs.p, static_cast<int32_t*>(dtok));
    std::vector<int32_t> got(static_cast<size_t>(n));
    cuda::download_bytes(got.data(), dtok, got.size() * sizeof(int32_t));
    for (void* p : {drows, dpens, dtok}) cuda::free_bytes(p);
    int compared = 0;
    for (int i = 0; i < n; ++i) {
      const SampleRequest& r = reqs[size_t(i)];
      if (top_p_is_ambiguous(host_penalized(logits, i, V, r), r)) continue;
      ++compared;
      EXPECT_EQ(got[size_t(i)], want[size_t(i)]) << "V " << V << " T " << r.temperature << " top_p " << r.top_p << " top_k " << r.top_k << " u " << r.u;
    }
    EXPECT_GE(compared, n * 9 / 10) << "V " << V;
  }
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
