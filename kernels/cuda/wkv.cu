// The recurrences (WKV of every generation, token shift). Every sequence of a batch is in one launch
// (grid y = sequence). Threads are laid out so each runs shared functions of kernels/rwkv_math.h on a
// channel (v4), a value column (v5/v6), a value row (v7; a quarter row per thread at head size 64);
// each loops over its sequence's tokens in order.
#include <cuda_runtime.h>

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/chained_launch.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/wkv7_row.cuh"
#include "kernels/rwkv_math.h"

namespace skein::cuda {

namespace {

// Thread (channel c, sequence blockIdx.y, block of kShiftTokens tokens blockIdx.z): the shift for
// those rows, so a long prompt's rows are copied in parallel. The thread that has a sequence's first
// token is the only one that touches the state: it reads it, then stores the sequence's last row.
constexpr int kShiftTokens = 64;
__global__ void token_shift_kernel(const float* xx, float* sx, const Slice* seqs, int C) {
  chained_start();
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const Slice q = seqs[blockIdx.y];
  const int t0 = int(blockIdx.z) * kShiftTokens, t1 = min(q.n, t0 + kShiftTokens);
  const size_t base = size_t(q.offset) * C + c;
  for (int t = max(t0, 1); t < t1; ++t) sx[base + size_t(t) * C] = xx[base + size_t(t - 1) * C];
  if (t0 == 0 && q.n > 0) {
    sx[base] = q.state[c];
    q.state[c] = xx[base + size_t(q.n - 1) * C];
  }
}

__global__ void wkv4_kernel(const Slice* seqs, int C, const float* w, const float* u, const float* k, const float* v, float* y) {
  chained_start();
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
  chained_start();
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
  chained_start();
  int h = blockIdx.x, row = threadIdx.x;
  if (row >= N) return;
  const Slice q = seqs[blockIdx.y];
  size_t C = size_t(H) * N, o = size_t(h) * N;
  for (int t = 0; t < q.n; ++t) {
    size_t i = size_t(q.offset + t) * C + o;
    math::wkv7_row_step(N, row, r + i, w + i, k + i, v + i, kk + i, a + i, q.state + o * N, y + i);
  }
}

// v7 with the usual head size N = 64, laid out for memory bandwidth (at decode each sequence's state
// is most of a layer's traffic) and for a short chain of work per token (prefill): a block holds 32
// of a head's rows, four threads per row (wkv7_row.cuh). Each token's inputs (r, w, k, kk, a, v) go
// through shared memory, several tokens ahead of the one computing.
constexpr int kRowsPerBlock = 32;

__global__ void __launch_bounds__(kRowsPerBlock * kWkv7ThreadsPerRow)
    wkv7_rows_kernel(const Slice* seqs, int H, const float* r, const float* w, const float* k, const float* v, const float* kk,
                     const float* a, float* y) {
  constexpr int N = kWkv7Head;
  chained_start();
  const Slice q = seqs[blockIdx.y];
  if (q.n <= 0) return;
  const int tid = threadIdx.x, part = tid % kWkv7ThreadsPerRow;
  const int h = blockIdx.x / (N / kRowsPerBlock), i = (blockIdx.x % (N / kRowsPerBlock)) * kRowsPerBlock + tid / kWkv7ThreadsPerRow;
  const size_t C = size_t(H) * N, o = size_t(h) * N;
  float* row = q.state + (o + size_t(i)) * N;  // 16-byte aligned: C and N*N are multiples of 4
  float4 s[kWkv7Chunks];
  wkv7_load_row(row, part, s);
  // Token inputs r, w, k, kk, a, v in a ring of kStages tokens, copied straight to shared memory
  // (cp.async) kStages - 1 tokens ahead of the one computing, so a prompt's tokens do not each wait a
  // memory round trip. Thread tid copies column tid % 64 of vectors (tid < 64 ? 0, 2, 4 : 1, 3, 5).
  constexpr int kStages = 8;
  __shared__ __align__(16) float in[kStages][6][N];
  const int col = tid % N, odd = tid / N;
  const float* src[3] = {odd ? w : r, odd ? kk : k, odd ? v : a};
  auto fetch = [&](int t) {  // token t's inputs into its stage; a group either way, so groups count tokens
    if (t < q.n)
#pragma unroll
      for (int m = 0; m < 3; ++m) copy_async(&in[t % kStages][2 * m + odd][col], src[m] + size_t(q.offset + t) * C + o + size_t(col));
    commit_async();
  };
  for (int t = 0; t < kStages - 1; ++t) fetch(t);
  for (int t = 0; t < q.n; ++t) {
    const int b = t % kStages;
    const size_t i0 = size_t(q.offset + t) * C;
    wait_async<kStages - 2>();  // this thread's copies of token t have landed
    __syncthreads();            // everyone's have, and everyone is done with token t - 1's stage
    fetch(t + kStages - 1);     // into token t - 1's stage
    const float yi = wkv7_row_step4(s, part, in[b][5][i], in[b][0], in[b][1], in[b][2], in[b][3], in[b][4]);
    if (part == 0) y[i0 + o + size_t(i)] = yi;
  }
  wkv7_store_row(row, part, s);
}

// v5/v6 with N = 64 (as the official CUDA kernels do): a block is one warp holding 32 of a head's
// columns of the state in registers, so a head takes two blocks and a token needs only warp barriers;
// each token's input vectors go through shared memory in two buffers, the next token's loaded while
// the current one computes. The arithmetic is the shared wkv5_column, called on the register copy.
constexpr int kLanes = 32;

template <int N, int kVectors>
struct TokenInputs {  // this lane's share of a token's input vectors (N / 32 elements of each)
  float e[kVectors][N / kLanes];
  __device__ void load(const float* const* src, size_t i0, int lane) {
#pragma unroll
    for (int a = 0; a < kVectors; ++a)
#pragma unroll
      for (int m = 0; m < N / kLanes; ++m) e[a][m] = src[a][i0 + size_t(lane + m * kLanes)];
  }
  __device__ void store(float (*dst)[N], int lane) const {
#pragma unroll
    for (int a = 0; a < kVectors; ++a)
#pragma unroll
      for (int m = 0; m < N / kLanes; ++m) dst[a][lane + m * kLanes] = e[a][m];
  }
};

template <int N>
__global__ void wkv5_fast_kernel(const Slice* seqs, int H, const float* r, const float* k, const float* v, const float* w_tok,
                                 const float* w_fixed, const float* u, float* y) {
  chained_start();
  const int h = blockIdx.x / (N / kLanes), lane = threadIdx.x, j = (blockIdx.x % (N / kLanes)) * kLanes + lane;
  const Slice q = seqs[blockIdx.y];
  if (q.n <= 0) return;
  const size_t C = size_t(H) * N, o = size_t(h) * N;
  __shared__ __align__(16) float in[2][3][N];  // r, k, w (16-byte aligned: vector loads)
  __shared__ __align__(16) float su[N];
  // A fixed decay (v5) is read at the same place for every token: a zero row stride.
  const size_t w_stride = w_tok ? C : 0;
  const float* w_base = w_tok ? w_tok + o : w_fixed + o;
  float col[N];
  float* S = q.state + o * N;
  SKEIN_UNROLL
  for (int i = 0; i < N; ++i) col[i] = S[i * N + j];
  for (int m = lane; m < N; m += kLanes) su[m] = u[o + m];
  const float* rk[2] = {r + o, k + o};
  TokenInputs<N, 2> next;
  float w_next[N / kLanes];
  auto load = [&](int t) {
    next.load(rk, size_t(q.offset + t) * C, lane);
#pragma unroll
    for (int m = 0; m < N / kLanes; ++m) w_next[m] = w_base[size_t(q.offset + t) * w_stride + size_t(lane + m * kLanes)];
  };
  auto store = [&](int b) {
    next.store(in[b], lane);
#pragma unroll
    for (int m = 0; m < N / kLanes; ++m) in[b][2][lane + m * kLanes] = w_next[m];
  };
  load(0);
  float v_next = v[size_t(q.offset) * C + o + j];
  store(0);
  __syncwarp();
  for (int t = 0; t < q.n; ++t) {
    const int b = t & 1;
    const size_t i0 = size_t(q.offset + t) * C;
    const float vj = v_next;
    if (t + 1 < q.n) {
      load(t + 1);
      v_next = v[i0 + C + o + j];
    }
    y[i0 + o + j] = math::wkv5_column(N, col, 1, vj, in[b][0], in[b][1], in[b][2], su);
    if (t + 1 < q.n) store(b ^ 1);
    __syncwarp();
  }
  SKEIN_UNROLL
  for (int i = 0; i < N; ++i) S[i * N + j] = col[i];
}

}  // namespace

void token_shift(const float* xx, float* sx, const Slice* seqs, int B, int C, int max_tokens) {
  if (B <= 0 || max_tokens <= 0) return;
  chain(token_shift_kernel, dim3((C + 127) / 128, B, (max_tokens + kShiftTokens - 1) / kShiftTokens), 128, "token_shift", xx, sx, seqs, C);
}

void wkv4(const Slice* seqs, int B, int C, const float* w, const float* u, const float* k, const float* v, float* y) {
  if (B <= 0) return;
  chain(wkv4_kernel, dim3((C + 127) / 128, B), 128, "wkv4", seqs, C, w, u, k, v, y);
}

void wkv5(const Slice* seqs, int B, int H, int N, const float* r, const float* k, const float* v, const float* w_tok, const float* w_fixed,
          const float* u, float* y) {
  if (B <= 0) return;
  if (N == 64) chain(wkv5_fast_kernel<64>, dim3(H * 64 / kLanes, B), kLanes, "wkv5", seqs, H, r, k, v, w_tok, w_fixed, u, y);
  else chain(wkv5_kernel, dim3(H, B), N, "wkv5", seqs, H, N, r, k, v, w_tok, w_fixed, u, y);
}

void wkv7(const Slice* seqs, int B, int H, int N, const float* r, const float* w, const float* k, const float* v, const float* kk,
          const float* a, float* y) {
  if (B <= 0) return;
  if (N == kWkv7Head)
    chain(wkv7_rows_kernel, dim3(H * kWkv7Head / kRowsPerBlock, B), kRowsPerBlock * kWkv7ThreadsPerRow, "wkv7", seqs, H, r, w, k, v, kk, a, y);
  else chain(wkv7_kernel, dim3(H, B), N, "wkv7", seqs, H, N, r, w, k, v, kk, a, y);
}

}  // namespace skein::cuda
