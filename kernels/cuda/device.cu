// Device discovery and memory; every CUDA error becomes a skein::Error.
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"

namespace skein::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

std::string device_name(int device) { return device_info(device).name; }

void set_device(int device) { check(cudaSetDevice(device), "cudaSetDevice"); }

DeviceInfo device_info(int device) {
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
  DeviceInfo d;
  d.name = p.name;
  d.sm = p.major * 10 + p.minor;
  int clock_khz = 0, bus_bits = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device);
  d.peak_bandwidth_gbs = 2.0 * double(clock_khz) * 1e3 * double(bus_bits) / 8.0 / 1e9;
  int current = 0;
  cudaGetDevice(&current);
  cudaSetDevice(device);
  cudaMemGetInfo(&d.free_bytes, &d.total_bytes);
  cudaSetDevice(current);
  return d;
}

void synchronize() { check(cudaDeviceSynchronize(), "synchronize"); }

float* alloc_floats(size_t n) { return static_cast<float*>(alloc_bytes(n * sizeof(float))); }
void* alloc_bytes(size_t n) {
  void* p = nullptr;
  check(cudaMalloc(&p, n ? n : 1), "cudaMalloc");
  return p;
}
void free_floats(float* p) { cudaFree(p); }
void free_bytes(void* p) { cudaFree(p); }
void upload(float* dst, const float* src, size_t n) { upload_bytes(dst, src, n * sizeof(float)); }
void upload_bytes(void* dst, const void* src, size_t n) { check(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice), "upload"); }
void download(float* dst, const float* src, size_t n) { check(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost), "download"); }
void copy(float* dst, const float* src, size_t n) { check(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice), "copy"); }

}  // namespace skein::cuda
