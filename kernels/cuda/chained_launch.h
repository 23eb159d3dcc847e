// Programmatic dependent launch (compute capability 9.0+, used by the .cu files only). A decode step
// is a chain of short kernels, each waiting for the one before; launched with chain(), a kernel is
// scheduled while its predecessor still runs, so launch latency and the predecessor's tail overlap
// its start (a product kernel also prefetches its weights, which nothing writes, meanwhile).
// The contract: a chained kernel calls wait_for_previous_kernel() before it touches memory that
// earlier work writes or reads, and release_next_kernel() once it may let its successor be
// scheduled. Without a launch attribute (older GPUs, SKEIN_CUDA_PDL=0) the wait returns at once.
// CUDA graphs keep these edges when they capture the stream.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda/cuda_check.h"

namespace skein::cuda {

__device__ __forceinline__ void wait_for_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void release_next_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// The top of a kernel that reads nothing before its inputs are ready. Releasing after the wait keeps
// at most two kernels of the chain on the GPU, the one running and the next one waiting, so a kernel
// that starts after one released this way starts only once every kernel before its predecessor has
// finished. (Two short kernels that precede product kernels release first, so that the product
// kernel is scheduled while the product before it still runs: norm_shift_mix and uint8 products'
// prepare launch. Every product kernel releases after its wait.)
__device__ __forceinline__ void chained_start() {
  wait_for_previous_kernel();
  release_next_kernel();
}

bool chained_launches();  // the current device takes them and SKEIN_CUDA_PDL is not 0 (device.cu)

// kernel<<<grid, block, shared_bytes, stream()>>>(args...), as a programmatic dependent launch where
// the device has them. Dynamic shared memory beyond 48 KiB needs the kernel's opt-in
// (cudaFuncAttributeMaxDynamicSharedMemorySize) on the current device first.
template <typename... Params, typename... Args>
void chain_with_shared(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, const char* what, Args&&... args) {
  cudaLaunchAttribute attribute = {};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream();
  config.attrs = &attribute;
  config.numAttrs = chained_launches() ? 1 : 0;
  check(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), what);
}
template <typename... Params, typename... Args>
void chain(void (*kernel)(Params...), dim3 grid, dim3 block, const char* what, Args&&... args) {
  chain_with_shared(kernel, grid, block, 0, what, std::forward<Args>(args)...);
}

}  // namespace skein::cuda
