// Warp-wide sums and a head's moments with a warp (used by the .cu files only). Sums are in double,
// each lane's elements in turn and then the warp, as the CPU's norm_row sums: results agree with it.
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

}  // namespace skein::cuda
