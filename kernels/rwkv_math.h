// Per-element and per-head arithmetic of every RWKV generation. These functions are the single
// definition of the math: the CPU backend calls them directly and the CUDA kernels call them per thread,
// so a CPU test of this file tests the GPU arithmetic too.
#pragma once
#include <math.h>
#include <stdint.h>

#include "kernels/numeric.h"

namespace skein {
// The activations the model applies elementwise.
enum class UnaryOp { Sigmoid, Silu, Tanh, ReluSquare, ExpNegExp, V7Decay };
}  // namespace skein

namespace skein::math {

SKEIN_HD float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
SKEIN_HD float silu(float x) { return x / (1.0f + expf(-x)); }
SKEIN_HD float relu_square(float x) { float r = x > 0.0f ? x : 0.0f; return r * r; }
SKEIN_HD float exp_neg_exp(float x) { return expf(-expf(x)); }
// v7 decay: exp(-exp(-softplus(-x) - 0.5)) == exp(-e^-0.5 * sigmoid(x)); 0.606531 = e^-0.5 as officially.
SKEIN_HD float v7_decay(float x) { return expf(-0.606531f * sigmoid(x)); }

SKEIN_HD float activate(UnaryOp op, float x) {
  switch (op) {
    case UnaryOp::Sigmoid: return sigmoid(x);
    case UnaryOp::Silu: return silu(x);
    case UnaryOp::Tanh: return tanhf(x);
    case UnaryOp::ReluSquare: return relu_square(x);
    case UnaryOp::ExpNegExp: return exp_neg_exp(x);
    case UnaryOp::V7Decay: return v7_decay(x);
  }
  return x;
}

// Token-shift mixes. v4/v5 interpolate with weight m on the current token; v6/v7 move from x towards
// the previous token by m.
SKEIN_HD float lerp_mix(float x, float prev, float m) { return x * m + prev * (1.0f - m); }
SKEIN_HD float delta_mix(float x, float prev, float m) { return x + (prev - x) * m; }

// Normalisation of one value once its row's moments are known: mean and the centred sum of squares,
// both accumulated in double so the result hardly depends on the summation order (a GPU block sums in
// another order than the CPU loop).
SKEIN_HD float norm_rstd(double centred_squares, int n, float eps) { return float(1.0 / sqrt(centred_squares / n + double(eps))); }
SKEIN_HD float norm_apply(float x, float mean, float rstd, float w, float b) { return (x - mean) * rstd * w + b; }

// Normalises one row of n values: (x - mean) / sqrt(var + eps) * w + b.
SKEIN_HD void norm_row(const float* x, const float* w, const float* b, float* y, int n, float eps) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += x[i];
  double mean = s / n;
  double v = 0;
  for (int i = 0; i < n; ++i) { double d = x[i] - mean; v += d * d; }
  float rstd = norm_rstd(v, n, eps);
  float fm = float(mean);
  for (int i = 0; i < n; ++i) y[i] = norm_apply(x[i], fm, rstd, w[i], b[i]);
}

// v4 WKV for one channel and one token. aa/bb are numerator/denominator scaled by exp(-pp).
// w = -exp(time_decay), u = time_first.
SKEIN_HD float wkv4_step(float w, float u, float k, float v, float& aa, float& bb, float& pp) {
  float ww = u + k;
  float p = fmaxf(pp, ww);
  float e1 = expf(pp - p), e2 = expf(ww - p);
  float y = (e1 * aa + e2 * v) / (e1 * bb + e2);
  ww = w + pp;
  p = fmaxf(ww, k);
  e1 = expf(ww - p);
  e2 = expf(k - p);
  aa = e1 * aa + e2 * v;
  bb = e1 * bb + e2;
  pp = p;
  return y;
}

// v5/v6 WKV for one head and one token; S is [key i][value j]:
//   y_j = sum_i r_i (u_i k_i v_j + S_ij),  S_ij <- w_i S_ij + k_i v_j
SKEIN_HD void wkv5_head_step(int N, const float* r, const float* k, const float* v, const float* w, const float* u, float* S,
                             float* y) {
  for (int j = 0; j < N; ++j) y[j] = 0.0f;
  for (int i = 0; i < N; ++i) {
    float ri = r[i], ki = k[i], wi = w[i], uki = u[i] * ki;
    float* Si = S + i * N;
    for (int j = 0; j < N; ++j) {
      float kv = ki * v[j];
      y[j] += ri * (uki * v[j] + Si[j]);
      Si[j] = wi * Si[j] + kv;
    }
  }
}

// One value column of the v5/v6 step: the same operations, in the same order, as wkv5_head_step does
// for column j, so a GPU thread per column computes bit for bit what the CPU loop computes. The column
// is S[i*stride] (stride N in the state; 1 for a GPU thread's copy in registers). Returns y_j.
SKEIN_HD float wkv5_column(int N, float* col, int stride, float vj, const float* r, const float* k, const float* w, const float* u) {
  float yj = 0.0f;
  SKEIN_UNROLL
  for (int i = 0; i < N; ++i) {
    float kv = k[i] * vj;
    float& Sij = col[i * stride];
    yj += r[i] * (u[i] * k[i] * vj + Sij);
    Sij = w[i] * Sij + kv;
  }
  return yj;
}

SKEIN_HD void wkv5_column_step(int N, int j, const float* r, const float* k, const float* v, const float* w, const float* u,
                               float* S, float* y) {
  y[j] = wkv5_column(N, S + j, N, v[j], r, k, w, u);
}

// v7 WKV for one value row of one head and one token; S is [value i][key j]:
//   S <- S diag(w) - (S kk)(kk*a)^T + v k^T,   y = S r
// Si is row i of the state; returns y_i. Both dot products keep sixteen partial sums, one per j mod 16,
// each in j order, then add them pairwise (wkv7_sum16). That is the order of the GPU's head-size-64
// kernel, whose row is four threads of four lanes (kernels/cuda/wkv7_row.cuh), and of the CPU's, whose
// row is 16-float SIMD chunks (kernels/cpu/wkv7_head.cpp); sixteen independent chains, not one N long.
// wkv7_update is one element's step, which both kernels call (V a chunk of 16 on the CPU).
template <class V, class E>
SKEIN_HD V wkv7_update(V& Sij, E vi, E sa, V r, V w, V k, V kk, V a) {
  const V s = Sij * w - sa * (kk * a) + vi * k;
  Sij = s;
  return s * r;
}
constexpr int kWkv7Partials = 16;
template <class P>
SKEIN_HD float wkv7_sum16(const P& p) {
  return (((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]))) +
         (((p[8] + p[9]) + (p[10] + p[11])) + ((p[12] + p[13]) + (p[14] + p[15])));
}
SKEIN_HD float wkv7_row(int N, float* Si, float vi, const float* r, const float* w, const float* k, const float* kk, const float* a) {
  float p[kWkv7Partials], q[kWkv7Partials];
  SKEIN_UNROLL
  for (int c = 0; c < kWkv7Partials; ++c) p[c] = q[c] = 0.0f;
  for (int j0 = 0; j0 < N; j0 += kWkv7Partials) {
    SKEIN_UNROLL
    for (int c = 0; c < kWkv7Partials; ++c)
      if (j0 + c < N) p[c] += Si[j0 + c] * kk[j0 + c];
  }
  const float sa = wkv7_sum16(p);
  for (int j0 = 0; j0 < N; j0 += kWkv7Partials) {
    SKEIN_UNROLL
    for (int c = 0; c < kWkv7Partials; ++c) {
      const int j = j0 + c;
      if (j < N) q[c] += wkv7_update(Si[j], vi, sa, r[j], w[j], k[j], kk[j], a[j]);
    }
  }
  return wkv7_sum16(q);
}

SKEIN_HD void wkv7_row_step(int N, int i, const float* r, const float* w, const float* k, const float* v, const float* kk,
                            const float* a, float* S, float* y) {
  y[i] = wkv7_row(N, S + i * N, v[i], r, w, k, kk, a);
}

SKEIN_HD void wkv7_head_step(int N, const float* r, const float* w, const float* k, const float* v, const float* kk,
                             const float* a, float* S, float* y) {
  for (int i = 0; i < N; ++i) wkv7_row_step(N, i, r, w, k, v, kk, a, S, y);
}

// v7 keys for one head of one token: kk = normalize(k*k_k) (F.normalize: x / max(||x||, 1e-12)),
// k = k*(1+(a-1)*k_a). The norm accumulates in double. A GPU warp runs the same per-element pieces.
SKEIN_HD float v7_key_scale(double squares) { return 1.0f / fmaxf(float(sqrt(squares)), 1e-12f); }
SKEIN_HD float v7_key_update(float k, float a, float k_a) { return k * (1.0f + (a - 1.0f) * k_a); }
SKEIN_HD void v7_keys_head(int N, float* k, float* kk, const float* a, const float* k_k, const float* k_a) {
  double ss = 0;
  for (int n = 0; n < N; ++n) {
    float z = k[n] * k_k[n];
    kk[n] = z;
    ss += double(z) * z;
  }
  const float inv = v7_key_scale(ss);
  for (int n = 0; n < N; ++n) {
    kk[n] *= inv;
    k[n] = v7_key_update(k[n], a[n], k_a[n]);
  }
}

// One element of v7's attention output: (ln_x(y) + bonus*v) * g.
SKEIN_HD float v7_output(float normed, float bonus, float v, float g) { return (normed + bonus * v) * g; }

// v7's attention output for one head of one token, in place: y = (ln_x(y) + sum(r*k*r_k) * v) * g.
// The bonus weight sum(r*k*r_k) accumulates in double like the norms, so a GPU warp's sum agrees.
SKEIN_HD void v7_output_head(int N, float* y, const float* r, const float* k, const float* v, const float* g, const float* ln_w,
                             const float* ln_b, const float* r_k) {
  double s = 0;
  for (int n = 0; n < N; ++n) s += double(r[n] * k[n] * r_k[n]);
  const float bonus = float(s);
  norm_row(y, ln_w, ln_b, y, N, 64e-5f);
  for (int n = 0; n < N; ++n) y[n] = v7_output(y[n], bonus, v[n], g[n]);
}

// v7's value residual: v moves towards the first layer's value by sigmoid(gate + v0).
SKEIN_HD float v7_value_residual(float v, float v_first, float gate_logit, float v0) { return v + (v_first - v) * sigmoid(gate_logit + v0); }

// The official uint8 weight: ((q + 0.5) * ry[i]) * rx[o] + my[i] + mx[o].
SKEIN_HD float dequant_u8(uint8_t q, float rx_o, float mx_o, float ry_i, float my_i) { return ((float(q) + 0.5f) * ry_i) * rx_o + my_i + mx_o; }

// One output of the official uint8 product, factored with xr = x*ry so the inner loop is one convert
// and one FMA per weight byte:  y[o] = rx[o]*(sum_i q[o][i]*xr[i] + 0.5*sum xr) + sum x*my + mx[o]*sum x.
SKEIN_HD float u8_output(float dot_q_xr, float sum_xr, float sum_x_my, float sum_x, float rx_o, float mx_o) {
  return rx_o * (dot_q_xr + 0.5f * sum_xr) + sum_x_my + mx_o * sum_x;
}

}  // namespace skein::math
