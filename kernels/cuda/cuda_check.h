// CUDA and cuBLAS status codes to skein::Error (used by the .cu files only).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "common/error.h"

// The floor for every kernel: the products use tf32 tensor cores (mma.sync), the recurrences cp.async.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "Skein's CUDA kernels need compute capability 8.0 or newer"
#endif

namespace skein::cuda {

// The current device's stream: every launch, copy and cuBLAS call of Skein goes to it (kernels/cuda/device.cu).
cudaStream_t stream();

// A failed call also leaves its error as the thread's last error; it is taken here so that the next
// check_launch does not report it as its own launch's.
inline void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();
  fail("CUDA: ", what, ": ", cudaGetErrorString(e));
}
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }
inline void check_blas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("cuBLAS: ", what, " failed (status ", int(s), ")");
}

}  // namespace skein::cuda
