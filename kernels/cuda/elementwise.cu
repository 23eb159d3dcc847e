// Elementwise, normalisation and embedding kernels. Each thread runs the shared per-element or per-row
// function of kernels/rwkv_math.h, so its arithmetic is the CPU backend's.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/rwkv_math.h"

namespace skein::cuda {

namespace {

constexpr int kThreads = 256;
int blocks_for(size_t n) { return int((n + kThreads - 1) / kThreads); }

// One thread per row keeps the accumulation order of the CPU's norm_row (moments in double, in order).
__global__ void layer_norm_kernel(const float* x, const float* w, const float* b, float* y, int T, int C) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < T) math::norm_row(x + size_t(t) * C, w, b, y + size_t(t) * C, C, 1e-5f);
}

__global__ void group_norm_kernel(float* x, const float* w, const float* b, int groups, int H, int N) {
  int g = blockIdx.x * blockDim.x + threadIdx.x;
  if (g >= groups) return;
  int h = g % H;
  float* p = x + size_t(g) * N;
  math::norm_row(p, w + size_t(h) * N, b + size_t(h) * N, p, N, 64e-5f);
}

template <typename E>
__device__ float widen(E v);
template <>
__device__ float widen<float>(float v) { return v; }
template <>
__device__ float widen<__half>(__half v) { return __half2float(v); }
template <>
__device__ float widen<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

// Gathers one embedding row per thread into x, widened, then normalises it in place with ln0.
template <typename E>
__global__ void embed_kernel(const E* emb, const float* ln_w, const float* ln_b, const int32_t* tokens, int T, int C, float* x) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= T) return;
  const E* src = emb + size_t(tokens[t]) * C;
  float* out = x + size_t(t) * C;
  for (int c = 0; c < C; ++c) out[c] = widen<E>(src[c]);
  math::norm_row(out, ln_w, ln_b, out, C, 1e-5f);
}

__global__ void unary_kernel(Unary op, float* x, size_t n) {
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = x[i];
  switch (op) {
    case Unary::Sigmoid: v = math::sigmoid(v); break;
    case Unary::Silu: v = math::silu(v); break;
    case Unary::Tanh: v = tanhf(v); break;
    case Unary::ReluSquare: v = math::relu_square(v); break;
    case Unary::ExpNegExp: v = math::exp_neg_exp(v); break;
    case Unary::V7Decay: v = math::v7_decay(v); break;
  }
  x[i] = v;
}

__global__ void add_kernel(float* x, const float* y, size_t n) {
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}
__global__ void mul_kernel(float* x, const float* y, size_t n) {
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= y[i];
}
__global__ void add_row_kernel(float* x, const float* b, size_t n, int C) {
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += b[i % size_t(C)];
}
__global__ void lerp_mix_kernel(const float* xx, const float* sx, const float* m, float* out, size_t n, int C) {
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = math::lerp_mix(xx[i], sx[i], m[i % size_t(C)]);
}
__global__ void delta_mix_kernel(const float* xx, const float* sx, const float* m, const float* m_tok, int64_t ld_tok, float* out, size_t n,
                                 int C) {
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  size_t t = i / size_t(C), c = i % size_t(C);
  float mc = m_tok ? m[c] + m_tok[t * size_t(ld_tok) + c] : m[c];
  out[i] = math::delta_mix(xx[i], sx[i], mc);
}
__global__ void value_residual_kernel(float* v, const float* v_first, const float* gate, size_t n) {
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) v[i] = v[i] + (v_first[i] - v[i]) * gate[i];
}

}  // namespace

void layer_norm(const float* x, const float* w, const float* b, float* y, int T, int C) {
  if (T <= 0) return;
  layer_norm_kernel<<<blocks_for(size_t(T)), kThreads>>>(x, w, b, y, T, C);
  check_launch("layer_norm");
}

void group_norm(float* x, const float* w, const float* b, int T, int H, int N) {
  int groups = T * H;
  if (groups <= 0) return;
  group_norm_kernel<<<blocks_for(size_t(groups)), kThreads>>>(x, w, b, groups, H, N);
  check_launch("group_norm");
}

void embed(const void* emb, WeightType type, const float* ln_w, const float* ln_b, const int32_t* tokens, int T, int C, float* x) {
  if (T <= 0) return;
  switch (type) {
    case WeightType::F32: embed_kernel<float><<<blocks_for(size_t(T)), kThreads>>>(static_cast<const float*>(emb), ln_w, ln_b, tokens, T, C, x); break;
    case WeightType::F16: embed_kernel<__half><<<blocks_for(size_t(T)), kThreads>>>(static_cast<const __half*>(emb), ln_w, ln_b, tokens, T, C, x); break;
    case WeightType::BF16:
      embed_kernel<__nv_bfloat16><<<blocks_for(size_t(T)), kThreads>>>(static_cast<const __nv_bfloat16*>(emb), ln_w, ln_b, tokens, T, C, x);
      break;
    case WeightType::U8: fail("CUDA embed: a quantized embedding table is not supported");
  }
  check_launch("embed");
}

void unary(Unary op, float* x, size_t n) {
  if (!n) return;
  unary_kernel<<<blocks_for(n), kThreads>>>(op, x, n);
  check_launch("unary");
}
void add(float* x, const float* y, size_t n) {
  if (!n) return;
  add_kernel<<<blocks_for(n), kThreads>>>(x, y, n);
  check_launch("add");
}
void mul(float* x, const float* y, size_t n) {
  if (!n) return;
  mul_kernel<<<blocks_for(n), kThreads>>>(x, y, n);
  check_launch("mul");
}
void add_row(float* x, const float* b, int T, int C) {
  size_t n = size_t(T) * C;
  if (!n) return;
  add_row_kernel<<<blocks_for(n), kThreads>>>(x, b, n, C);
  check_launch("add_row");
}
void lerp_mix(const float* xx, const float* sx, const float* m, float* out, int T, int C) {
  size_t n = size_t(T) * C;
  if (!n) return;
  lerp_mix_kernel<<<blocks_for(n), kThreads>>>(xx, sx, m, out, n, C);
  check_launch("lerp_mix");
}
void delta_mix(const float* xx, const float* sx, const float* m, const float* m_tok, int64_t ld_tok, float* out, int T, int C) {
  size_t n = size_t(T) * C;
  if (!n) return;
  delta_mix_kernel<<<blocks_for(n), kThreads>>>(xx, sx, m, m_tok, ld_tok, out, n, C);
  check_launch("delta_mix");
}
void v7_value_residual(float* v, const float* v_first, const float* gate, size_t n) {
  if (!n) return;
  value_residual_kernel<<<blocks_for(n), kThreads>>>(v, v_first, gate, n);
  check_launch("v7_value_residual");
}

}  // namespace skein::cuda
