// Elementwise, normalisation and embedding kernels. Elementwise kernels run the shared per-element
// functions of kernels/rwkv_math.h; norms take a block (or warp) per row and share the moment and
// per-element formulas with the CPU's norm_row.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "common/error.h"
#include "kernels/cuda/chained_launch.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/warp_sums.cuh"
#include "kernels/rwkv_math.h"

namespace skein::cuda {

namespace {

constexpr int kThreads = 256;
int blocks_for(size_t n) { return int((n + kThreads - 1) / kThreads); }
// Threads for one row of C values: a multiple of 32, at most 1024, about 8 values each.
int row_threads(int C) { return std::min(1024, std::max(32, (C / 8 + 31) / 32 * 32)); }

// Sums of two doubles per thread over the block (blockDim a multiple of 32, at most 1024); every
// thread gets both totals. One pair of barriers for both.
struct Sums {
  double a, b;
};
__device__ Sums block_sums(double a, double b) {
  __shared__ double partial[2][32];
  for (int off = 16; off > 0; off /= 2) {
    a += __shfl_down_sync(0xffffffffu, a, off);
    b += __shfl_down_sync(0xffffffffu, b, off);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  __syncthreads();  // `partial` may still be read by the previous call
  if (lane == 0) {
    partial[0][warp] = a;
    partial[1][warp] = b;
  }
  __syncthreads();
  Sums total{0, 0};
  for (int i = 0; i < warps; ++i) {
    total.a += partial[0][i];
    total.b += partial[1][i];
  }
  return total;
}

// A row's mean and 1/std in one pass over it: the sum and the sum of squares in double (the centred
// sum of squares is their difference, exact enough in double for any activation range a model has),
// read as float4 where the row allows, so a decode step's row is two loads per thread, not two
// dependent passes.
__device__ Moments block_moments(const float* x, int C, float eps) {
  double s = 0, ss = 0;
  if (C % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
#pragma unroll 2
    for (int c = threadIdx.x; c < C / 4; c += blockDim.x) {
      const float4 v = x4[c];
      s += (double(v.x) + double(v.y)) + (double(v.z) + double(v.w));
      ss += (double(v.x) * v.x + double(v.y) * v.y) + (double(v.z) * v.z + double(v.w) * v.w);
    }
  } else {
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      s += x[c];
      ss += double(x[c]) * x[c];
    }
  }
  const Sums t = block_sums(s, ss);
  const double mean = t.a / C;
  return {float(mean), math::norm_rstd(fmax(0.0, t.b - t.a * mean), C, eps)};
}

// One block per row: the moments, then every element through the shared norm_apply
// (kernels/rwkv_math.h), as the CPU's norm_row does.
__device__ void norm_row_block(const float* x, const float* w, const float* b, float* y, int C, float eps) {
  const Moments m = block_moments(x, C, eps);
  for (int c = threadIdx.x; c < C; c += blockDim.x) y[c] = math::norm_apply(x[c], m.mean, m.rstd, w[c], b[c]);
}

__global__ void layer_norm_kernel(const float* x, const float* w, const float* b, float* y, int C) {
  chained_start();
  const size_t t = blockIdx.x;
  norm_row_block(x + t * C, w, b, y + t * C, C, 1e-5f);
}

// The head kernels below (group_norm, v7_keys, v7_output) take one warp per head of a token, each lane
// holding its values (elements lane, lane + 32, ...; PL per lane) in registers: every load is issued
// before the first reduction, so a head costs one memory round trip, not one per pass over it. Their
// sums (warp_sums.cuh) are the CPU's.
// A group is a head of N values.
template <int PL>
__global__ void group_norm_kernel(float* x, const float* w, const float* b, int groups, int H, int N) {
  chained_start();
  const int g = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (g >= groups) return;
  const size_t o = size_t(g) * N, wo = size_t(g % H) * N;
  float xv[PL], wv[PL], bv[PL];
#pragma unroll
  for (int m = 0; m < PL; ++m) {
    const int i = lane + 32 * m;
    if (i >= N) break;
    xv[m] = x[o + i], wv[m] = w[wo + i], bv[m] = b[wo + i];
  }
  const Moments mo = warp_moments(xv, N, lane, 64e-5f);
#pragma unroll
  for (int m = 0; m < PL; ++m) {
    const int i = lane + 32 * m;
    if (i >= N) break;
    x[o + i] = math::norm_apply(xv[m], mo.mean, mo.rstd, wv[m], bv[m]);
  }
}

template <typename E>
__device__ float widen(E v);
template <>
__device__ float widen<float>(float v) { return v; }
template <>
__device__ float widen<__half>(__half v) { return __half2float(v); }
template <>
__device__ float widen<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

// One block per token: gathers its embedding row widened into x, then normalises it in place with ln0
// (the moments read the row as float4, other threads' columns: a barrier between the two).
template <typename E>
__global__ void embed_kernel(const E* emb, const float* ln_w, const float* ln_b, const int32_t* tokens, int C, float* x) {
  chained_start();
  const size_t t = blockIdx.x;
  const E* src = emb + size_t(tokens[t]) * C;
  float* out = x + t * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) out[c] = widen<E>(src[c]);
  __syncthreads();
  norm_row_block(out, ln_w, ln_b, out, C, 1e-5f);
}

__global__ void gather_rows_kernel(const float* x, const int32_t* rows, int C, float* out) {
  chained_start();
  const float* src = x + size_t(rows[blockIdx.x]) * C;
  float* dst = out + size_t(blockIdx.x) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
}

__global__ void add_kernel(float* x, const float* y, size_t n) {
  chained_start();
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}
__global__ void mul_kernel(float* x, const float* y, size_t n) {
  chained_start();
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= y[i];
}
__global__ void lerp_mix_kernel(const float* xx, const float* sx, const float* m, float* out, size_t n, int C) {
  chained_start();
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = math::lerp_mix(xx[i], sx[i], m[i % size_t(C)]);
}
// Every mix's weight for token t, channel c (loaded together: the stores that follow may alias them
// as far as the compiler knows, so loads after a store would each wait a memory round trip).
__device__ __forceinline__ void load_mix_weights(const Mixes& mixes, int64_t ld_tok, size_t t, size_t c, float (&mc)[Mixes::kMax]) {
#pragma unroll
  for (int k = 0; k < Mixes::kMax; ++k) {  // constant indices keep the parameters out of local memory
    if (k >= mixes.count) break;
    const Mixes::Mix& d = mixes.mix[k];
    mc[k] = d.m_tok ? d.m[c] + d.m_tok[t * size_t(ld_tok) + c] : d.m[c];
  }
}
// Element i of every mix, from the token's value x, its predecessor's, and the weights.
__device__ __forceinline__ void store_mixes(const Mixes& mixes, size_t i, float x, float prev, const float (&mc)[Mixes::kMax]) {
#pragma unroll
  for (int k = 0; k < Mixes::kMax; ++k) {
    if (k >= mixes.count) break;
    mixes.mix[k].out[i] = math::delta_mix(x, prev, mc[k]);
  }
}

// Each thread reads its element of xx and sx once for every mix.
__global__ void delta_mix_kernel(const float* xx, const float* sx, Mixes mixes, int64_t ld_tok, size_t n, int C) {
  chained_start();
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float mc[Mixes::kMax];
  load_mix_weights(mixes, ld_tok, i / size_t(C), i % size_t(C), mc);
  store_mixes(mixes, i, xx[i], sx[i], mc);
}
constexpr int kMixColumns = 2;
// Block (row t, column chunk blockIdx.y): every block of a row sums the row's moments (with the
// layer norm's block size, so they are summed as layer_norm sums them), then handles its chunk's
// columns; a short batch splits each row over many blocks so a decode step is not one block's
// latency. A row's shifted value is its predecessor's norm, recomputed here (that row's blocks may
// not have run), or the sequence's state; the blocks of a sequence's first row also move the state to
// its last row's norm, each thread reading its state elements before writing them. A thread takes
// kMixColumns columns a round and loads all of them before its first store (the stores may alias the
// loads as far as the compiler knows: a column at a time would wait a memory round trip each).
// It releases its successor (a layer's products, which read only weights before their own wait)
// before waiting itself, so the product kernel's launch and weight prefetch overlap the product
// kernel before this one, not just this short one.
__global__ void __launch_bounds__(1024) norm_shift_mix_kernel(const float* x, const float* w, const float* b, const Slice* seqs, int B, Mixes mixes, int C, int chunk) {
  release_next_kernel();
  wait_for_previous_kernel();
  const int t = blockIdx.x;
  int lo = 0, hi = B - 1;  // the last slice that starts at or before t (empty slices lose to the next)
  if (t < B && seqs[t].offset == t && seqs[t].n > 0) lo = hi = t;  // a decode step: sequence t is row t
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (seqs[mid].offset <= t) lo = mid;
    else hi = mid - 1;
  }
  const Slice q = seqs[lo];
  const int p = t - q.offset;
  const float* row = x + size_t(t) * C;
  const float* last = x + size_t(q.offset + q.n - 1) * C;
  const Moments now = block_moments(row, C, 1e-5f);
  const Moments before = p > 0 ? block_moments(row - C, C, 1e-5f) : Moments{};
  const bool moves_state = p == 0 && q.n > 1;  // the state becomes the last row's norm, not this one's
  const Moments end = moves_state ? block_moments(last, C, 1e-5f) : now;
  const int c1 = min(C, int(blockIdx.y + 1) * chunk);
  for (int c0 = int(blockIdx.y) * chunk + int(threadIdx.x); c0 < c1; c0 += kMixColumns * int(blockDim.x)) {
    float xv[kMixColumns], wv[kMixColumns], bv[kMixColumns], prev[kMixColumns], lastv[kMixColumns], mc[kMixColumns][Mixes::kMax];
#pragma unroll
    for (int u = 0; u < kMixColumns; ++u) {
      const int c = c0 + u * int(blockDim.x);
      if (c >= c1) break;
      xv[u] = row[c];
      wv[u] = w[c];
      bv[u] = b[c];
      prev[u] = p > 0 ? row[c - C] : q.state[c];
      lastv[u] = moves_state ? last[c] : 0.0f;
      load_mix_weights(mixes, 0, size_t(t), size_t(c), mc[u]);
    }
#pragma unroll
    for (int u = 0; u < kMixColumns; ++u) {
      const int c = c0 + u * int(blockDim.x);
      if (c >= c1) break;
      const float xx = math::norm_apply(xv[u], now.mean, now.rstd, wv[u], bv[u]);
      float sx;
      if (p > 0) {
        sx = math::norm_apply(prev[u], before.mean, before.rstd, wv[u], bv[u]);
      } else {
        sx = prev[u];
        q.state[c] = moves_state ? math::norm_apply(lastv[u], end.mean, end.rstd, wv[u], bv[u]) : xx;
      }
      store_mixes(mixes, size_t(t) * C + c, xx, sx, mc[u]);
    }
  }
}

__global__ void value_residual_kernel(float* v, const float* v_first, const float* gate, const float* v0, size_t n, int C) {
  chained_start();
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) v[i] = math::v7_value_residual(v[i], v_first[i], gate[i], v0[i % size_t(C)]);
}

template <int PL>
__global__ void v7_keys_kernel(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int groups, int H, int N) {
  chained_start();
  const int grp = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (grp >= groups) return;
  const size_t o = size_t(grp) * N, w = size_t(grp % H) * N;
  float kv[PL], kkw[PL], av[PL], kaw[PL];
#pragma unroll
  for (int m = 0; m < PL; ++m) {
    const int i = lane + 32 * m;
    if (i >= N) break;
    kv[m] = k[o + i], kkw[m] = k_k[w + i], av[m] = a[o + i], kaw[m] = k_a[w + i];
  }
  const float inv = warp_key_scale(kv, kkw, N, lane);
#pragma unroll
  for (int m = 0; m < PL; ++m) {
    const int i = lane + 32 * m;
    if (i >= N) break;
    kk[o + i] = kv[m] * kkw[m] * inv;
    k[o + i] = math::v7_key_update(kv[m], av[m], kaw[m]);
  }
}

// ln_x's moments and the bonus weight as warp sums, then each element through the shared v7_output
// (kernels/rwkv_math.h), as the CPU's v7_output_head does.
template <int PL>
__global__ void v7_output_kernel(float* y, const float* r, const float* k, const float* v, const float* g, const float* ln_w, const float* ln_b,
                                 const float* r_k, int groups, int H, int N) {
  chained_start();
  const int grp = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (grp >= groups) return;
  const size_t o = size_t(grp) * N, w = size_t(grp % H) * N;
  float yv[PL], rv[PL], kv[PL], vv[PL], gv[PL], rkw[PL], lnw[PL], lnb[PL];
#pragma unroll
  for (int m = 0; m < PL; ++m) {
    const int i = lane + 32 * m;
    if (i >= N) break;
    yv[m] = y[o + i], rv[m] = r[o + i], kv[m] = k[o + i], vv[m] = v[o + i], gv[m] = g[o + i];
    rkw[m] = r_k[w + i], lnw[m] = ln_w[w + i], lnb[m] = ln_b[w + i];
  }
  const float b = warp_bonus(rv, kv, rkw, N, lane);
  const Moments mo = warp_moments(yv, N, lane, 64e-5f);
#pragma unroll
  for (int m = 0; m < PL; ++m) {
    const int i = lane + 32 * m;
    if (i >= N) break;
    y[o + i] = math::v7_output(math::norm_apply(yv[m], mo.mean, mo.rstd, lnw[m], lnb[m]), b, vv[m], gv[m]);
  }
}

// Runs launch(std::integral_constant<int, PL>) for the registers per lane a head of N values needs.
template <typename Launch>
void per_lane(int N, const char* what, Launch launch) {
  if (N > 256) fail(std::string("CUDA ") + what + ": head size " + std::to_string(N) + " is above 256, the most a warp holds");
  if (N <= 32) launch(std::integral_constant<int, 1>{});
  else if (N <= 64) launch(std::integral_constant<int, 2>{});
  else if (N <= 128) launch(std::integral_constant<int, 4>{});
  else launch(std::integral_constant<int, 8>{});
}

}  // namespace

void layer_norm(const float* x, const float* w, const float* b, float* y, int T, int C) {
  if (T <= 0) return;
  chain(layer_norm_kernel, T, row_threads(C), "layer_norm", x, w, b, y, C);
}

void group_norm(float* x, const float* w, const float* b, int T, int H, int N) {
  int groups = T * H;
  if (groups <= 0) return;
  per_lane(N, "group_norm", [&](auto pl) { chain(group_norm_kernel<pl()>, (groups + 7) / 8, 256, "group_norm", x, w, b, groups, H, N); });
}

void embed(const void* emb, WeightType type, const float* ln_w, const float* ln_b, const int32_t* tokens, int T, int C, float* x) {
  if (T <= 0) return;
  switch (type) {
    case WeightType::F32: return chain(embed_kernel<float>, T, row_threads(C), "embed", static_cast<const float*>(emb), ln_w, ln_b, tokens, C, x);
    case WeightType::F16: return chain(embed_kernel<__half>, T, row_threads(C), "embed", static_cast<const __half*>(emb), ln_w, ln_b, tokens, C, x);
    case WeightType::BF16:
      return chain(embed_kernel<__nv_bfloat16>, T, row_threads(C), "embed", static_cast<const __nv_bfloat16*>(emb), ln_w, ln_b, tokens, C, x);
    case WeightType::U8: fail("CUDA embed: a quantized embedding table is not supported");
  }
}

void gather_rows(const float* x, const int32_t* rows, int n, int C, float* out) {
  if (n <= 0) return;
  chain(gather_rows_kernel, n, row_threads(C), "gather_rows", x, rows, C, out);
}

void add(float* x, const float* y, size_t n) {
  if (!n) return;
  chain(add_kernel, blocks_for(n), kThreads, "add", x, y, n);
}
void mul(float* x, const float* y, size_t n) {
  if (!n) return;
  chain(mul_kernel, blocks_for(n), kThreads, "mul", x, y, n);
}
void lerp_mix(const float* xx, const float* sx, const float* m, float* out, int T, int C) {
  size_t n = size_t(T) * C;
  if (!n) return;
  chain(lerp_mix_kernel, blocks_for(n), kThreads, "lerp_mix", xx, sx, m, out, n, C);
}
void delta_mix(const float* xx, const float* sx, const Mixes& mixes, int64_t ld_tok, int T, int C) {
  size_t n = size_t(T) * C;
  if (!n || mixes.count <= 0) return;
  chain(delta_mix_kernel, blocks_for(n), kThreads, "delta_mix", xx, sx, mixes, ld_tok, n, C);
}
void norm_shift_mix(const float* x, const float* ln_w, const float* ln_b, const Slice* seqs, int B, const Mixes& mixes, int T, int C) {
  if (T <= 0 || B <= 0) return;
  // Up to about 256 blocks: a short batch's rows are split in chunks of at least a block's width (one
  // block per row would leave a decode step one block's latency), a long one's are not (each block
  // re-reads its rows for the moments; on an H200, 4 chunks at batch 256 took 25% longer than 1).
  const int threads = row_threads(C), chunks = std::clamp(256 / T, 1, std::max(1, C / threads));
  const int chunk = (C + chunks - 1) / chunks;
  chain(norm_shift_mix_kernel, dim3(T, chunks), threads, "norm_shift_mix", x, ln_w, ln_b, seqs, B, mixes, C, chunk);
}
void v7_value_residual(float* v, const float* v_first, const float* gate, const float* v0, int T, int C) {
  size_t n = size_t(T) * C;
  if (!n) return;
  chain(value_residual_kernel, blocks_for(n), kThreads, "v7_value_residual", v, v_first, gate, v0, n, C);
}

void v7_keys(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int T, int H, int N) {
  int groups = T * H;
  if (groups <= 0) return;
  per_lane(N, "v7_keys", [&](auto pl) { chain(v7_keys_kernel<pl()>, (groups + 7) / 8, 256, "v7_keys", k, kk, a, k_k, k_a, groups, H, N); });
}

void v7_output(float* y, const float* r, const float* k, const float* v, const float* g, const float* ln_w, const float* ln_b, const float* r_k,
               int T, int H, int N) {
  int groups = T * H;
  if (groups <= 0) return;
  per_lane(N, "v7_output",
           [&](auto pl) { chain(v7_output_kernel<pl()>, (groups + 7) / 8, 256, "v7_output", y, r, k, v, g, ln_w, ln_b, r_k, groups, H, N); });
}

}  // namespace skein::cuda
