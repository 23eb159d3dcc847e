// One launch for several independent jobs (a layer's r, k and v products, their inputs' rounding, ...):
// the jobs go in a small table passed by value, each owning a run of the grid's blocks (used by the
// .cu files only).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/product_memory.h"

namespace skein::cuda {

// Kernel parameters are read with constant indices only (a dynamic index would copy the whole table
// into local memory): a block finds its entry by unrolled selection, the last whose first_block it
// has reached.
template <typename Entry, int kMax>
__device__ Entry pick(const Entry (&table)[kMax], int count, int index) {
  Entry e = table[0];
#pragma unroll
  for (int i = 1; i < kMax; ++i)
    if (i < count && index >= table[i].first_block) e = table[i];
  return e;
}

// Gives each job of a table its run of blocks, in order (`blocks_of(job)` blocks each), and returns
// the launch's grid size.
template <typename Jobs, typename BlocksOf>
int64_t lay_out_blocks(Jobs& jobs, BlocksOf blocks_of) {
  int64_t blocks = 0;
  for (int i = 0; i < jobs.count; ++i) {
    jobs.job[i].first_block = int(blocks);
    blocks += blocks_of(jobs.job[i]);
  }
  return blocks;
}

}  // namespace skein::cuda
