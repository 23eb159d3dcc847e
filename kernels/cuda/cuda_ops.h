// Host entry points of the CUDA kernels. Pointers are device memory. The per-element math is the same
// __host__ __device__ code the CPU backend runs (kernels/rwkv_math.h); the CUDA backend of the model
// builds on these.
#pragma once
#include <cstddef>
#include <string>

namespace skein::cuda {

// Number of usable GPUs; 0 when there is no driver or no device (cudaGetDeviceCount fails).
int device_count();
std::string device_name(int device);

float* alloc_floats(size_t n);
void free_floats(float* p);
void upload(float* dst, const float* src, size_t n);
void download(float* dst, const float* src, size_t n);

// y[t] = layer_norm(x[t]) over T rows of C, eps 1e-5 (one block per row).
void layer_norm(const float* x, const float* w, const float* b, float* y, int T, int C);
// v7 WKV over T tokens for H heads of N (one thread per value row of each head's state).
void wkv7(int T, int H, int N, const float* r, const float* w, const float* k, const float* v, const float* kk, const float* a,
          float* S, float* y);
// y[T x rows] = x[T x cols] · W[rows x cols]^T with cuBLAS, fp32 accumulation.
void linear_f32(const float* W, int rows, int cols, const float* x, float* y, int T);

}  // namespace skein::cuda
