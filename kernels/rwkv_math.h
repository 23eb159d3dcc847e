// Per-element and per-head arithmetic of every RWKV generation. These functions are the single
// definition of the math: the CPU backend calls them directly and the CUDA kernels call them per thread,
// so a CPU test of this file tests the GPU arithmetic too.
#pragma once
#include <math.h>

#include "kernels/numeric.h"

namespace skein::math {

SKEIN_HD float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
SKEIN_HD float silu(float x) { return x / (1.0f + expf(-x)); }
SKEIN_HD float relu_square(float x) { float r = x > 0.0f ? x : 0.0f; return r * r; }
SKEIN_HD float exp_neg_exp(float x) { return expf(-expf(x)); }
// v7 decay: exp(-exp(-softplus(-x) - 0.5)) == exp(-e^-0.5 * sigmoid(x)); 0.606531 = e^-0.5 as officially.
SKEIN_HD float v7_decay(float x) { return expf(-0.606531f * sigmoid(x)); }

// Token-shift mixes. v4/v5 interpolate with weight m on the current token; v6/v7 move from x towards
// the previous token by m.
SKEIN_HD float lerp_mix(float x, float prev, float m) { return x * m + prev * (1.0f - m); }
SKEIN_HD float delta_mix(float x, float prev, float m) { return x + (prev - x) * m; }

// Normalises one row of n values: (x - mean) / sqrt(var + eps) * w + b. Moments accumulate in double so
// the result does not depend on the summation order.
SKEIN_HD void norm_row(const float* x, const float* w, const float* b, float* y, int n, float eps) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += x[i];
  double mean = s / n;
  double v = 0;
  for (int i = 0; i < n; ++i) { double d = x[i] - mean; v += d * d; }
  float rstd = float(1.0 / sqrt(v / n + double(eps)));
  float fm = float(mean);
  for (int i = 0; i < n; ++i) y[i] = (x[i] - fm) * rstd * w[i] + b[i];
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

// v7 WKV for one head and one token; S is [value i][key j]:
//   S <- S diag(w) - (S kk)(kk*a)^T + v k^T,   y = S r
SKEIN_HD void wkv7_head_step(int N, const float* r, const float* w, const float* k, const float* v, const float* kk,
                             const float* a, float* S, float* y) {
  for (int i = 0; i < N; ++i) {
    float* Si = S + i * N;
    float sa = 0.0f;
    for (int j = 0; j < N; ++j) sa += Si[j] * kk[j];
    float vi = v[i], acc = 0.0f;
    for (int j = 0; j < N; ++j) {
      float s = Si[j] * w[j] - sa * (kk[j] * a[j]) + vi * k[j];
      Si[j] = s;
      acc += s * r[j];
    }
    y[i] = acc;
  }
}

}  // namespace skein::math
