// Device discovery and memory for the CUDA kernels; every CUDA error becomes a skein::Error.
#include <cuda_runtime.h>

#include "common/error.h"
#include "kernels/cuda/cuda_ops.h"

namespace skein::cuda {

namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA: ", what, ": ", cudaGetErrorString(e));
}
}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
  return p.name;
}

float* alloc_floats(size_t n) {
  void* p = nullptr;
  check(cudaMalloc(&p, n * sizeof(float)), "cudaMalloc");
  return static_cast<float*>(p);
}
void free_floats(float* p) { cudaFree(p); }
void upload(float* dst, const float* src, size_t n) { check(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice), "upload"); }
void download(float* dst, const float* src, size_t n) {
  check(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost), "download");
}

}  // namespace skein::cuda
