// Asynchronous copies from global to shared memory (cp.async, compute capability 8.0+), in commit
// groups a thread waits for by count: the recurrences stage tokens ahead of the one computing, the
// decode products keep rounds of weights in flight without holding them in registers. A thread's
// wait makes its own copies visible to it (used by the .cu files only).
#pragma once
#include <cuda_runtime.h>

namespace skein::cuda {

__device__ __forceinline__ unsigned shared_address(const void* p) { return unsigned(__cvta_generic_to_shared(p)); }

// 4 bytes, through L1 (a recurrence's inputs are read by a block's every row).
__device__ __forceinline__ void copy_async(float* shared, const float* global) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(shared_address(shared)), "l"(global) : "memory");
}
// 16 bytes past L1 (read once), fetched into L2 in 256-byte pieces; `bytes` 0 writes zeros and reads
// nothing. The destination is a shared-space address (shared_address), which a loop computes once:
// converting a pointer costs a read of the block's cluster id each time.
__device__ __forceinline__ void copy_async_16(unsigned shared, const void* global, unsigned bytes) {
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;" ::"r"(shared), "l"(global), "r"(bytes) : "memory");
}
__device__ __forceinline__ void commit_async() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Until at most kPending of this thread's latest groups are still in flight.
template <int kPending>
__device__ __forceinline__ void wait_async() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}

}  // namespace skein::cuda
