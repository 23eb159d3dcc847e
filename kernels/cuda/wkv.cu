// The recurrences (WKV of every generation) and v7's per-head key and bonus steps. Threads are laid out
// so each runs one shared function of kernels/rwkv_math.h: a channel (v4), a value column (v5/v6), a
// value row (v7), a head of a token (v7 keys, bonus); each loops over the sequence's tokens in order.
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/rwkv_math.h"

namespace skein::cuda {

namespace {

__global__ void wkv4_kernel(int T, int C, const float* w, const float* u, const float* k, const float* v, float* aa, float* bb, float* pp,
                            float* y) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float a = aa[c], b = bb[c], p = pp[c];
  for (int t = 0; t < T; ++t) {
    size_t i = size_t(t) * C + c;
    y[i] = math::wkv4_step(w[c], u[c], k[i], v[i], a, b, p);
  }
  aa[c] = a;
  bb[c] = b;
  pp[c] = p;
}

// Block h, thread j: column j of head h's state. A thread reads and writes only its own column (and the
// token's read-only inputs), so the columns need no synchronisation; tokens follow each other in order.
__global__ void wkv5_kernel(int T, int H, int N, const float* r, const float* k, const float* v, const float* w_tok, const float* w_fixed,
                            const float* u, float* S, float* y) {
  int h = blockIdx.x, j = threadIdx.x;
  if (j >= N) return;
  size_t C = size_t(H) * N, o = size_t(h) * N;
  for (int t = 0; t < T; ++t) {
    size_t i = t * C + o;
    const float* w = w_tok ? w_tok + i : w_fixed + o;
    math::wkv5_column_step(N, j, r + i, k + i, v + i, w, u + o, S + o * N, y + i);
  }
}

__global__ void wkv7_kernel(int T, int H, int N, const float* r, const float* w, const float* k, const float* v, const float* kk,
                            const float* a, float* S, float* y) {
  int h = blockIdx.x, row = threadIdx.x;
  if (row >= N) return;
  size_t C = size_t(H) * N, o = size_t(h) * N;
  for (int t = 0; t < T; ++t) {
    size_t i = t * C + o;
    math::wkv7_row_step(N, row, r + i, w + i, k + i, v + i, kk + i, a + i, S + o * N, y + i);
  }
}

__global__ void v7_keys_kernel(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int groups, int H, int N) {
  int g = blockIdx.x * blockDim.x + threadIdx.x;
  if (g >= groups) return;
  size_t o = size_t(g) * N, h = size_t(g % H) * N;
  math::v7_keys_head(N, k + o, kk + o, a + o, k_k + h, k_a + h);
}

__global__ void v7_bonus_kernel(float* y, const float* r, const float* k, const float* v, const float* r_k, int groups, int H, int N) {
  int g = blockIdx.x * blockDim.x + threadIdx.x;
  if (g >= groups) return;
  size_t o = size_t(g) * N, h = size_t(g % H) * N;
  math::v7_bonus_head(N, y + o, r + o, k + o, v + o, r_k + h);
}

}  // namespace

void wkv4(int T, int C, const float* w, const float* u, const float* k, const float* v, float* aa, float* bb, float* pp, float* y) {
  if (T <= 0) return;
  wkv4_kernel<<<(C + 127) / 128, 128>>>(T, C, w, u, k, v, aa, bb, pp, y);
  check_launch("wkv4");
}

void wkv5(int T, int H, int N, const float* r, const float* k, const float* v, const float* w_tok, const float* w_fixed, const float* u,
          float* S, float* y) {
  if (T <= 0) return;
  wkv5_kernel<<<H, N>>>(T, H, N, r, k, v, w_tok, w_fixed, u, S, y);
  check_launch("wkv5");
}

void wkv7(int T, int H, int N, const float* r, const float* w, const float* k, const float* v, const float* kk, const float* a,
          float* S, float* y) {
  if (T <= 0) return;
  wkv7_kernel<<<H, N>>>(T, H, N, r, w, k, v, kk, a, S, y);
  check_launch("wkv7");
}

void v7_keys(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int T, int H, int N) {
  int groups = T * H;
  if (groups <= 0) return;
  v7_keys_kernel<<<(groups + 127) / 128, 128>>>(k, kk, a, k_k, k_a, groups, H, N);
  check_launch("v7_keys");
}

void v7_bonus(float* y, const float* r, const float* k, const float* v, const float* r_k, int T, int H, int N) {
  int groups = T * H;
  if (groups <= 0) return;
  v7_bonus_kernel<<<(groups + 127) / 128, 128>>>(y, r, k, v, r_k, groups, H, N);
  check_launch("v7_bonus");
}

}  // namespace skein::cuda
