// Warp-wide sums over a head a warp holds (used by the .cu files only): its moments, and v7's key norm
// and bonus weight. Sums are in double, each lane's elements in turn and then the warp, as the CPU's
// norm_row, v7_keys_head and v7_output_head sum: results agree with them. The separate v7 kernels
// (elementwise.cu) and the fused decode step (v7_attention.cu) share these.
#pragma once
#include <cuda_runtime.h>

#include "kernels/rwkv_math.h"

namespace skein::cuda {

__device__ __forceinline__ double warp_sum(double v) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

struct Moments {
  float mean, rstd;
};

// The moments of a head of N values a warp holds in registers, PL per lane (elements lane, lane + 32,
// ...; N <= 32 * PL).
template <int PL>
__device__ Moments warp_moments(const float (&v)[PL], int N, int lane, float eps) {
  double s = 0;
#pragma unroll
  for (int m = 0; m < PL; ++m)
    if (lane + 32 * m < N) s += v[m];
  const double mean = warp_sum(s) / N;
  double var = 0;
#pragma unroll
  for (int m = 0; m < PL; ++m)
    if (lane + 32 * m < N) {
      const double d = v[m] - mean;
      var += d * d;
    }
  return {float(mean), math::norm_rstd(warp_sum(var), N, eps)};
}

// kk's scale (math::v7_key_scale) for a head's keys k and weights k_k, held PL per lane.
template <int PL>
__device__ float warp_key_scale(const float (&k)[PL], const float (&k_k)[PL], int N, int lane) {
  double squares = 0;
#pragma unroll
  for (int m = 0; m < PL; ++m)
    if (lane + 32 * m < N) {
      const float z = k[m] * k_k[m];
      squares += double(z) * z;
    }
  return math::v7_key_scale(warp_sum(squares));
}

// v7's bonus weight sum(r*k*r_k) over a head, held PL per lane (k: the updated keys).
template <int PL>
__device__ float warp_bonus(const float (&r)[PL], const float (&k)[PL], const float (&r_k)[PL], int N, int lane) {
  double bonus = 0;
#pragma unroll
  for (int m = 0; m < PL; ++m)
    if (lane + 32 * m < N) bonus += double(r[m] * k[m] * r_k[m]);
  return float(warp_sum(bonus));
}

}  // namespace skein::cuda
