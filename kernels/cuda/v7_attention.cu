// v7's attention between its products and its output product (worker/backend.h's v7_attention).
// A decode step (every sequence one token, head size 64) takes one launch: a block per head of each
// sequence does the keys, the value residual, the WKV step of its 64 state rows and ln_x with the
// output, where four launches (keys, residual, wkv7, output) each waited for the one before and
// passed r, k, v and y through memory. Anything else (a prompt's chunk) runs those four kernels.
// Every value is the shared per-element function of kernels/rwkv_math.h, summed as the separate
// kernels sum it (warp_sums.cuh, wkv7_row.cuh), so the two paths agree with each other and the CPU.
#include <cuda_runtime.h>

#include "kernels/cuda/chained_launch.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/warp_sums.cuh"
#include "kernels/cuda/wkv7_row.cuh"
#include "kernels/rwkv_math.h"

namespace skein::cuda {

namespace {

constexpr int kHeadThreads = kWkv7Head * kWkv7ThreadsPerRow;  // four threads per state row

// Block (head blockIdx.x, sequence blockIdx.y). Warp 0 holds the head's keys two elements a lane (as
// the v7_keys and v7_output kernels do), warps 1 and 2 its values and what the output needs (ln_x's
// weights, the gate) in shared memory, not in warp 0's registers across the WKV step: at 64 registers
// a thread an SM holds four blocks, at 69 three, and a batch's step is bound by moving the state; then
// every thread steps its quarter of a state row; then warp 0 normalises the head's outputs and writes them.
__global__ void __launch_bounds__(kHeadThreads) v7_attention_decode_kernel(const Slice* seqs, int H, V7AttentionArgs in, float* y) {
  constexpr int N = kWkv7Head;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int i = tid / kWkv7ThreadsPerRow, part = tid % kWkv7ThreadsPerRow;
  const size_t o = size_t(blockIdx.x) * N;
  // Before the wait: what the kernels this one may overlap do not write. The state rows were last
  // written by this op a step ago (this kernel's predecessor, a product launch, released it after its
  // own wait: every kernel before that one has finished), the batch table and the weights before the
  // step began.
  const Slice q = seqs[blockIdx.y];
  float* row = q.state + (o + size_t(i)) * N;  // 16-byte aligned: N*N is a multiple of 4
  float4 s[kWkv7Chunks];
  wkv7_load_row(row, part, s);
  float k_k[2], k_a[2], r_k[2];
  if (warp == 0)
#pragma unroll
    for (int m = 0; m < 2; ++m) {
      const size_t e = o + size_t(lane + 32 * m);
      k_k[m] = in.k_k[e], k_a[m] = in.k_a[e], r_k[m] = in.r_k[e];
    }
  chained_start();

  __shared__ __align__(16) float r[N], w[N], k[N], kk[N], a[N], v[N], out[N], ln_w[N], ln_b[N], g[N];
  const size_t base = size_t(q.offset) * size_t(H) * N + o;  // this token's head
  float bonus = 0.0f;
  if (warp == 0) {
    float kv[2], av[2], rv[2], k_new[2];
#pragma unroll
    for (int m = 0; m < 2; ++m) {
      const size_t e = base + size_t(lane + 32 * m);
      kv[m] = in.k[e], av[m] = in.a[e], rv[m] = in.r[e];
    }
    const float inv = warp_key_scale(kv, k_k, N, lane);
#pragma unroll
    for (int m = 0; m < 2; ++m) {
      const int e = lane + 32 * m;
      k_new[m] = math::v7_key_update(kv[m], av[m], k_a[m]);
      kk[e] = kv[m] * k_k[m] * inv;
      k[e] = k_new[m];
      r[e] = rv[m];
      a[e] = av[m];
    }
    bonus = warp_bonus(rv, k_new, r_k, N, lane);
  } else if (warp < 3) {
    const int e = tid - 32;
    float ve = in.v[base + size_t(e)];
    if (in.gate) ve = math::v7_value_residual(ve, in.v_first[base + size_t(e)], in.gate[base + size_t(e)], in.v0[o + size_t(e)]);
    else in.v_first[base + size_t(e)] = ve;  // the first layer's values, for the layers after it
    v[e] = ve;
    w[e] = in.w[base + size_t(e)];
    ln_w[e] = in.ln_w[o + size_t(e)], ln_b[e] = in.ln_b[o + size_t(e)], g[e] = in.g[base + size_t(e)];
  }
  __syncthreads();
  const float yi = wkv7_row_step4(s, part, v[i], r, w, k, kk, a);
  wkv7_store_row(row, part, s);
  if (part == 0) out[i] = yi;
  __syncthreads();
  if (warp == 0) {
    const float yv[2] = {out[lane], out[lane + 32]};
    const Moments mo = warp_moments(yv, N, lane, 64e-5f);
#pragma unroll
    for (int m = 0; m < 2; ++m) {
      const int e = lane + 32 * m;
      y[base + size_t(e)] = math::v7_output(math::norm_apply(yv[m], mo.mean, mo.rstd, ln_w[e], ln_b[e]), bonus, v[e], g[e]);
    }
  }
}

}  // namespace

void v7_attention(const Slice* seqs, int B, int H, int N, const V7AttentionArgs& in, float* y, int T, bool one_token_each) {
  if (B <= 0 || T <= 0) return;
  if (one_token_each && N == kWkv7Head) {
    chain(v7_attention_decode_kernel, dim3(H, B), kHeadThreads, "v7_attention", seqs, H, in, y);
    return;
  }
  const int C = H * N;
  v7_keys(in.k, in.kk, in.a, in.k_k, in.k_a, T, H, N);
  if (in.gate) v7_value_residual(in.v, in.v_first, in.gate, in.v0, T, C);
  else copy(in.v_first, in.v, size_t(T) * size_t(C));
  wkv7(seqs, B, H, N, in.r, in.w, in.k, in.v, in.kk, in.a, y);
  v7_output(y, in.r, in.k, in.v, in.g, in.ln_w, in.ln_b, in.r_k, T, H, N);
}

}  // namespace skein::cuda
