// One token's v7 WKV step for one value row of a head of 64, by the row's four threads (used by the
// .cu files only). Each thread holds 16 of the row's state values in registers as four float4 chunks
// (chunk part + 4m), so one warp instruction moves 8 rows' 64 contiguous bytes; the token's inputs
// are 16-byte aligned arrays of 64 (shared memory). The row's two dot products are summed across its
// four threads with two shuffles each: sixteen partial sums (j mod 16) added pairwise, math::wkv7_row's
// order. The per-element arithmetic is the shared wkv7_update.
#pragma once
#include <cuda_runtime.h>

#include "kernels/rwkv_math.h"

namespace skein::cuda {

constexpr int kWkv7Head = 64, kWkv7ThreadsPerRow = 4, kWkv7Chunks = kWkv7Head / 4 / kWkv7ThreadsPerRow;

// The row's state chunks of this thread (`part` of the row's four).
__device__ __forceinline__ void wkv7_load_row(const float* row, int part, float4 (&s)[kWkv7Chunks]) {
  const float4* r4 = reinterpret_cast<const float4*>(row);
#pragma unroll
  for (int m = 0; m < kWkv7Chunks; ++m) s[m] = r4[part + kWkv7ThreadsPerRow * m];
}
__device__ __forceinline__ void wkv7_store_row(float* row, int part, const float4 (&s)[kWkv7Chunks]) {
  float4* r4 = reinterpret_cast<float4*>(row);
#pragma unroll
  for (int m = 0; m < kWkv7Chunks; ++m) r4[part + kWkv7ThreadsPerRow * m] = s[m];
}

// Updates the chunks and returns the row's output y_i (every thread of the row gets it).
__device__ __forceinline__ float wkv7_row_step4(float4 (&s)[kWkv7Chunks], int part, float vi, const float* r, const float* w, const float* k,
                                                const float* kk, const float* a) {
  const float4 *rv = reinterpret_cast<const float4*>(r), *wv = reinterpret_cast<const float4*>(w), *kv = reinterpret_cast<const float4*>(k),
               *kkv = reinterpret_cast<const float4*>(kk), *av = reinterpret_cast<const float4*>(a);
  float p0 = 0.0f, p1 = 0.0f, p2 = 0.0f, p3 = 0.0f;
#pragma unroll
  for (int m = 0; m < kWkv7Chunks; ++m) {
    const float4 c = kkv[part + kWkv7ThreadsPerRow * m];
    p0 += s[m].x * c.x;
    p1 += s[m].y * c.y;
    p2 += s[m].z * c.z;
    p3 += s[m].w * c.w;
  }
  float sa = (p0 + p1) + (p2 + p3);
  sa += __shfl_xor_sync(0xffffffffu, sa, 1);
  sa += __shfl_xor_sync(0xffffffffu, sa, 2);
  float q0 = 0.0f, q1 = 0.0f, q2 = 0.0f, q3 = 0.0f;
#pragma unroll
  for (int m = 0; m < kWkv7Chunks; ++m) {
    const int c = part + kWkv7ThreadsPerRow * m;
    const float4 rc = rv[c], wc = wv[c], kc = kv[c], kkc = kkv[c], ac = av[c];
    q0 += math::wkv7_update(s[m].x, vi, sa, rc.x, wc.x, kc.x, kkc.x, ac.x);
    q1 += math::wkv7_update(s[m].y, vi, sa, rc.y, wc.y, kc.y, kkc.y, ac.y);
    q2 += math::wkv7_update(s[m].z, vi, sa, rc.z, wc.z, kc.z, kkc.z, ac.z);
    q3 += math::wkv7_update(s[m].w, vi, sa, rc.w, wc.w, kc.w, kkc.w, ac.w);
  }
  float yi = (q0 + q1) + (q2 + q3);
  yi += __shfl_xor_sync(0xffffffffu, yi, 1);
  yi += __shfl_xor_sync(0xffffffffu, yi, 2);
  return yi;
}

}  // namespace skein::cuda
