// First CUDA kernels: layer norm, v7 WKV and the cuBLAS product. Their arithmetic is the shared
// kernels/rwkv_math.h, so tests/test_cuda_kernels.cpp compares them with the CPU path bit for bit
// where the operation order allows.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "common/error.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/rwkv_math.h"

namespace skein::cuda {

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA: ", what, ": ", cudaGetErrorString(e));
}

__global__ void layer_norm_kernel(const float* x, const float* w, const float* b, float* y, int C) {
  // One thread per row keeps the accumulation order identical to the CPU's norm_row.
  int t = blockIdx.x;
  if (threadIdx.x == 0) math::norm_row(x + size_t(t) * C, w, b, y + size_t(t) * C, C, 1e-5f);
}

__global__ void wkv7_kernel(int T, int H, int N, const float* r, const float* w, const float* k, const float* v, const float* kk,
                            const float* a, float* S, float* y) {
  int h = blockIdx.x;
  if (threadIdx.x != 0) return;
  size_t C = size_t(H) * N, o = size_t(h) * N;
  for (int t = 0; t < T; ++t) {
    size_t i = t * C + o;
    math::wkv7_head_step(N, r + i, w + i, k + i, v + i, kk + i, a + i, S + o * N, y + i);
  }
}

cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t x;
    if (cublasCreate(&x) != CUBLAS_STATUS_SUCCESS) fail("cuBLAS: cublasCreate failed");
    return x;
  }();
  return h;
}

}  // namespace

void layer_norm(const float* x, const float* w, const float* b, float* y, int T, int C) {
  layer_norm_kernel<<<T, 32>>>(x, w, b, y, C);
  check(cudaGetLastError(), "layer_norm launch");
  check(cudaDeviceSynchronize(), "layer_norm");
}

void wkv7(int T, int H, int N, const float* r, const float* w, const float* k, const float* v, const float* kk, const float* a,
          float* S, float* y) {
  wkv7_kernel<<<H, 32>>>(T, H, N, r, w, k, v, kk, a, S, y);
  check(cudaGetLastError(), "wkv7 launch");
  check(cudaDeviceSynchronize(), "wkv7");
}

void linear_f32(const float* W, int rows, int cols, const float* x, float* y, int T) {
  // Column-major view: y^T [rows x T] = W [rows x cols] (stored row-major = W^T col-major) * x^T.
  const float one = 1.0f, zero = 0.0f;
  if (cublasSgemm(handle(), CUBLAS_OP_T, CUBLAS_OP_N, rows, T, cols, &one, W, cols, x, cols, &zero, y, rows) != CUBLAS_STATUS_SUCCESS)
    fail("cuBLAS: sgemm failed");
  check(cudaDeviceSynchronize(), "linear_f32");
}

}  // namespace skein::cuda
