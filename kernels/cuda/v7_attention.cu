// v7's attention between its products and its output product (worker/backend.h's v7_attention).
// A decode step (every sequence one token, head size 64) takes one launch: a block does the keys, the
// value residual, the WKV step of the 64 state rows and ln_x with the output for one head of one
// sequence after another, where four launches (keys, residual, wkv7, output) each waited for the one
// before and passed r, k, v and y through memory. Anything else (a prompt's chunk) runs those four
// kernels. Every value is the shared per-element function of kernels/rwkv_math.h, summed as the
// separate kernels sum it (warp_sums.cuh, wkv7_row.cuh), so the two paths agree with each other and the CPU.
//
// A large batch's step is bound by moving the state (16 KiB a head each way; 17 GB a step for 256
// sequences of 7B shape), so the blocks are as many as an SM holds and each stages its next head's
// state and inputs in shared memory (cp.async) while it computes this one: a block per head holding
// its state in registers had bytes in flight only between its start and its loads' arrival, and moved
// the state at half the H200's bandwidth (7.2 ms of a 21.5 ms step at batch 256).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/chained_launch.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/warp_sums.cuh"
#include "kernels/cuda/wkv7_row.cuh"
#include "kernels/rwkv_math.h"

namespace skein::cuda {

namespace {

constexpr int kHeadThreads = kWkv7Head * kWkv7ThreadsPerRow;  // four threads per state row
constexpr int kHeadState = kWkv7Head * kWkv7Head;              // floats

// A head's inputs as staged: the token's, then the head's weights (the last three of the token's only
// after the first layer).
enum Input { kR, kW, kK, kA, kV, kG, kKK, kKA, kRK, kLnW, kLnB, kVFirst, kGate, kV0, kInputs };

// One head of one sequence, staged: its state rows and its inputs.
struct Stage {
  float4 state[kHeadState / 4];
  float in[kInputs][kWkv7Head];
};

// Where input `a` of a head comes from: the token's row (base) or the head's weights (o).
__device__ __forceinline__ const float* input_source(const V7AttentionArgs& in, int a, size_t base, size_t o) {
  switch (a) {
    case kR: return in.r + base;
    case kW: return in.w + base;
    case kK: return in.k + base;
    case kA: return in.a + base;
    case kV: return in.v + base;
    case kG: return in.g + base;
    case kKK: return in.k_k + o;
    case kKA: return in.k_a + o;
    case kRK: return in.r_k + o;
    case kLnW: return in.ln_w + o;
    case kLnB: return in.ln_b + o;
    case kVFirst: return in.v_first + base;
    case kGate: return in.gate + base;
    default: return in.v0 + o;
  }
}

// Item `item` of a step: head item % H of sequence item / H. Where its state rows start, its offset
// in the head's weights (o) and in the token's rows (base).
struct HeadItem {
  float* state;
  size_t o, base;
};
__device__ __forceinline__ HeadItem head_item(const Slice* seqs, int H, int item) {
  const Slice q = seqs[item / H];
  const size_t o = size_t(item % H) * kWkv7Head;
  return {q.state + o * kWkv7Head, o, size_t(q.offset) * size_t(H) * kWkv7Head + o};  // state 16-byte aligned: N*N is a multiple of 4
}

// Its state rows into the stage, 16 bytes a copy, four a thread, neighbours' copies contiguous.
__device__ __forceinline__ void stage_state(const HeadItem& h, Stage& st) {
  const float4* rows = reinterpret_cast<const float4*>(h.state);
  const unsigned dst = shared_address(st.state);
#pragma unroll
  for (int j = 0; j < kHeadState / 4 / kHeadThreads; ++j) {
    const int c = int(threadIdx.x) + kHeadThreads * j;
    copy_async_16(dst + 16u * unsigned(c), rows + c, 16);
  }
}
// Its inputs, 4 bytes a copy (no alignment asked of the callers' arrays); a quarter of the block per input.
__device__ __forceinline__ void stage_inputs(const V7AttentionArgs& in, const HeadItem& h, Stage& st) {
  const int e = int(threadIdx.x) % kWkv7Head, quarter = int(threadIdx.x) / kWkv7Head;
  const int inputs = in.gate ? kInputs : kVFirst;
#pragma unroll
  for (int a = 0; a < kInputs; ++a)
    if (a % 4 == quarter && a < inputs) copy_async(&st.in[a][e], input_source(in, a, h.base, h.o) + e);
}

// Blocks of kHeadThreads, as many as the device holds at once (each takes items blockIdx.x,
// blockIdx.x + gridDim.x, ...). Per item: warp 0 the keys (two elements a lane, as the v7_keys and
// v7_output kernels hold them), warps 1 and 2 the values; every thread its quarter of a state row; warp 0
// ln_x and the output. The next item's copies are on their way meanwhile (one commit group per item,
// empty past the last), and the block's loop and barriers are the same for every thread. Four blocks
// an SM (64 registers a thread): 64 KiB of state on its way per SM, where Little's law asks about 36
// KiB of an H200 (4.8 TB/s over 132 SMs at ~1 us).
__global__ void __launch_bounds__(kHeadThreads, 4) v7_attention_decode_kernel(const Slice* seqs, int B, int H, V7AttentionArgs in, float* y) {
  constexpr int N = kWkv7Head;
  __shared__ Stage stage[2];
  __shared__ __align__(16) float k[N], kk[N], v[N], out[N];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int i = tid / kWkv7ThreadsPerRow, part = tid % kWkv7ThreadsPerRow;
  const int items = B * H, stride = int(gridDim.x);
  int item = int(blockIdx.x);
  // The first state before the wait: the state rows were last written by this op a step ago (this
  // kernel's predecessor, a product launch, released it after its own wait: every kernel before that
  // one has finished), the batch table before the step began. The inputs after it.
  if (item < items) stage_state(head_item(seqs, H, item), stage[0]);
  chained_start();
  if (item < items) stage_inputs(in, head_item(seqs, H, item), stage[0]);
  commit_async();

  for (int n = 0; item < items; ++n, item += stride) {
    Stage& st = stage[n % 2];
    const int next = item + stride;
    if (next < items) {  // to the stage the item before this one used: every thread has left it (the loop's last barrier)
      const HeadItem ahead = head_item(seqs, H, next);
      stage_state(ahead, stage[(n + 1) % 2]);
      stage_inputs(in, ahead, stage[(n + 1) % 2]);
    }
    commit_async();
    wait_async<1>();  // this item's copies, this thread's
    __syncthreads();  // and every thread's

    const HeadItem h = head_item(seqs, H, item);
    float bonus = 0.0f;
    if (warp == 0) {
      float kv[2], k_k[2], rv[2], r_k[2], k_new[2];
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        const int e = lane + 32 * m;
        kv[m] = st.in[kK][e], k_k[m] = st.in[kKK][e], rv[m] = st.in[kR][e], r_k[m] = st.in[kRK][e];
      }
      const float inv = warp_key_scale(kv, k_k, N, lane);
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        const int e = lane + 32 * m;
        k_new[m] = math::v7_key_update(kv[m], st.in[kA][e], st.in[kKA][e]);
        kk[e] = kv[m] * k_k[m] * inv;
        k[e] = k_new[m];
      }
      bonus = warp_bonus(rv, k_new, r_k, N, lane);
    } else if (warp < 3) {
      const int e = tid - 32;
      float ve = st.in[kV][e];
      if (in.gate) ve = math::v7_value_residual(ve, st.in[kVFirst][e], st.in[kGate][e], st.in[kV0][e]);
      else in.v_first[h.base + size_t(e)] = ve;  // the first layer's values, for the layers after it
      v[e] = ve;
    }
    __syncthreads();
    float4 s[kWkv7Chunks];
    wkv7_load_row(reinterpret_cast<const float*>(st.state) + i * N, part, s);
    const float yi = wkv7_row_step4(s, part, v[i], st.in[kR], st.in[kW], k, kk, st.in[kA]);
    wkv7_store_row(h.state + size_t(i) * N, part, s);
    if (part == 0) out[i] = yi;
    __syncthreads();
    if (warp == 0) {
      const float yv[2] = {out[lane], out[lane + 32]};
      const Moments mo = warp_moments(yv, N, lane, 64e-5f);
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        const int e = lane + 32 * m;
        y[h.base + size_t(e)] = math::v7_output(math::norm_apply(yv[m], mo.mean, mo.rstd, st.in[kLnW][e], st.in[kLnB][e]), bonus, v[e], st.in[kG][e]);
      }
    }
    __syncthreads();  // before the next item writes k, kk, v, out and the next copies go to this stage
  }
}

// As many decode blocks as the current device holds at once (once per device).
int decode_blocks() {
  static std::mutex mu;
  static std::map<int, int> blocks;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(mu);
  auto it = blocks.find(dev);
  if (it != blocks.end()) return it->second;
  int sms = 0, per_sm = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute (SMs)");
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, v7_attention_decode_kernel, kHeadThreads, 0), "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  return blocks[dev] = std::max(1, sms * per_sm);
}

}  // namespace

void v7_attention(const Slice* seqs, int B, int H, int N, const V7AttentionArgs& in, float* y, int T, bool one_token_each) {
  if (B <= 0 || T <= 0) return;
  if (one_token_each && N == kWkv7Head) {
    const int blocks = int(std::min<int64_t>(int64_t(B) * H, decode_blocks()));
    chain(v7_attention_decode_kernel, dim3(unsigned(blocks)), kHeadThreads, "v7_attention", seqs, B, H, in, y);
    return;
  }
  const int C = H * N;
  v7_keys(in.k, in.kk, in.a, in.k_k, in.k_a, T, H, N);
  if (in.gate) v7_value_residual(in.v, in.v_first, in.gate, in.v0, T, C);
  else copy(in.v_first, in.v, size_t(T) * size_t(C));
  wkv7(seqs, B, H, N, in.r, in.w, in.k, in.v, in.kk, in.a, y);
  v7_output(y, in.r, in.k, in.v, in.g, in.ln_w, in.ln_b, in.r_k, T, H, N);
}

}  // namespace skein::cuda
