// The recurrences (WKV of every generation, token shift) and v7's per-head key and bonus steps. Every
// sequence of a batch is in one launch (grid y = sequence). Threads are laid out so each runs one shared
// function of kernels/rwkv_math.h: a channel (v4), a value column (v5/v6), a value row (v7), a head of
// a token (v7 keys, bonus); each loops over its sequence's tokens in order.
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/rwkv_math.h"

namespace skein::cuda {

namespace {

// Thread (sequence blockIdx.y, channel c): the shift for that channel over the sequence's rows.
__global__ void token_shift_kernel(const float* xx, float* sx, const Slice* seqs, int C) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const Slice q = seqs[blockIdx.y];
  if (q.n <= 0) return;
  size_t base = size_t(q.offset) * C + c;
  sx[base] = q.state[c];
  for (int t = 1; t < q.n; ++t) sx[base + size_t(t) * C] = xx[base + size_t(t - 1) * C];
  q.state[c] = xx[base + size_t(q.n - 1) * C];
}

__global__ void wkv4_kernel(const Slice* seqs, int C, const float* w, const float* u, const float* k, const float* v, float* y) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const Slice q = seqs[blockIdx.y];
  float *aa = q.state, *bb = q.state + C, *pp = q.state + 2 * C;
  float a = aa[c], b = bb[c], p = pp[c];
  for (int t = 0; t < q.n; ++t) {
    size_t i = size_t(q.offset + t) * C + c;
    y[i] = math::wkv4_step(w[c], u[c], k[i], v[i], a, b, p);
  }
  aa[c] = a;
  bb[c] = b;
  pp[c] = p;
}

// Block (head blockIdx.x, sequence blockIdx.y), thread j: column j of that head's state. A thread reads
// and writes only its own column (and the token's read-only inputs), so the columns need no
// synchronisation; tokens follow each other in order.
__global__ void wkv5_kernel(const Slice* seqs, int H, int N, const float* r, const float* k, const float* v, const float* w_tok,
                            const float* w_fixed, const float* u, float* y) {
  int h = blockIdx.x, j = threadIdx.x;
  if (j >= N) return;
  const Slice q = seqs[blockIdx.y];
  size_t C = size_t(H) * N, o = size_t(h) * N;
  for (int t = 0; t < q.n; ++t) {
    size_t i = size_t(q.offset + t) * C + o;
    const float* w = w_tok ? w_tok + i : w_fixed + o;
    math::wkv5_column_step(N, j, r + i, k + i, v + i, w, u + o, q.state + o * N, y + i);
  }
}

// Block (head, sequence), thread: one value row of that head's state.
__global__ void wkv7_kernel(const Slice* seqs, int H, int N, const float* r, const float* w, const float* k, const float* v, const float* kk,
                            const float* a, float* y) {
  int h = blockIdx.x, row = threadIdx.x;
  if (row >= N) return;
  const Slice q = seqs[blockIdx.y];
  size_t C = size_t(H) * N, o = size_t(h) * N;
  for (int t = 0; t < q.n; ++t) {
    size_t i = size_t(q.offset + t) * C + o;
    math::wkv7_row_step(N, row, r + i, w + i, k + i, v + i, kk + i, a + i, q.state + o * N, y + i);
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

void token_shift(const float* xx, float* sx, const Slice* seqs, int B, int C) {
  if (B <= 0) return;
  token_shift_kernel<<<dim3((C + 127) / 128, B), 128>>>(xx, sx, seqs, C);
  check_launch("token_shift");
}

void wkv4(const Slice* seqs, int B, int C, const float* w, const float* u, const float* k, const float* v, float* y) {
  if (B <= 0) return;
  wkv4_kernel<<<dim3((C + 127) / 128, B), 128>>>(seqs, C, w, u, k, v, y);
  check_launch("wkv4");
}

void wkv5(const Slice* seqs, int B, int H, int N, const float* r, const float* k, const float* v, const float* w_tok, const float* w_fixed,
          const float* u, float* y) {
  if (B <= 0) return;
  wkv5_kernel<<<dim3(H, B), N>>>(seqs, H, N, r, k, v, w_tok, w_fixed, u, y);
  check_launch("wkv5");
}

void wkv7(const Slice* seqs, int B, int H, int N, const float* r, const float* w, const float* k, const float* v, const float* kk,
          const float* a, float* y) {
  if (B <= 0) return;
  wkv7_kernel<<<dim3(H, B), N>>>(seqs, H, N, r, w, k, v, kk, a, y);
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
