// Decode-sized products (up to 8 rows of x) on the tensor cores, one kernel for every weight format
// (used by kernels/cuda/linear.cu, and by the product sweep, bench/product_sweep.cu, which runs the
// kernel at other pipeline depths than the product's).
//
// A warp multiplies a 16-row tile of W by up to 8 rows of x with mma.m16n8k8 in tf32 (mma.m16n8k16 in
// fp16 for uint8 codes): the tile is the A operand, the rows of x are B's columns, and the sums are
// fp32. The multiply-adds are free next to the memory traffic, so a warp can afford 16 rows (each
// activation it loads serves 16 weights, where a warp per row read x through L1 twice per weight byte)
// and a batch of 8 costs what a batch of 1 does: the weights' bytes are the only work left.
//
// fp32 accuracy: fp16 and bf16 weights widen exactly to tf32 (their mantissas fit its 10 bits), and
// each activation is split in the loop into hi = tf32(x) and lo = tf32(x - hi) (mma::split_tf32), two
// products summed in fp32: x is carried to 2^-21 of its value, the products are exact and the sums
// fp32. uint8 codes are exact in fp16, so uint8 products run on mma.m16n8k16 in fp16 instead: twice
// the k per instruction, and a code pair becomes an A register in a permute and a subtract, where
// widening each code to tf32 took two instructions (at batch 1 the uint8 kernel moved its bytes at
// about half fp16's rate, H200). Its activations come from linear.cu's prepare launch as the fp16
// parts of x*ry scaled by a power of two per row (mma::split_f16, carried to 2^-22), and the sums are
// scaled back in the output.
//
// No shuffles: each lane's own 16-byte loads of two tile rows (and the same columns of its row of x)
// are its operands, A and B agreeing on which column sits at each k (kernels/mma_tile.h has the
// layout as functions the CPU tests multiply through). The 4 lanes of a row read 64 contiguous bytes.
//
// Memory: a round is kSteps such loads per lane and row. The weights go through a ring of kStages
// rounds per warp in shared memory, filled by cp.async: kStages - 1 rounds are on their way while the
// warp multiplies one, and no register holds a weight before it is used. Rounds held in registers
// left one round in flight, 2 KiB a warp, 32 KiB an SM at two blocks: about what Little's law asks of
// an H200 (4.8 TB/s over 132 SMs at ~0.8 us), with nothing to spare. `skein bench --products` times
// the kernel at several depths (bench/product_sweep.cu): on an H200, rounds of 4 loads in a ring of 2
// (4 KiB a warp in flight) beat 2 loads in a ring of 4 at every 7B shape, fp16 and uint8, batch 1 and
// 8, by 1 to 11 points of a plain read's rate (the same 8 KiB ring, the same sums).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <mutex>
#include <set>
#include <type_traits>

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/chained_launch.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/job_table.cuh"
#include "kernels/mma_tile.h"
#include "kernels/product_output.h"
#include "kernels/rwkv_math.h"

namespace skein::cuda {
// Internal to each .cu file that includes it: its kernels are its own instantiations.
namespace {

// The products' pipeline: loads per lane and row in a round, rounds in a warp's ring.
constexpr int kMatvecSteps = 4, kMatvecStages = 2;
constexpr int kMatvecWarps = mma::kWarps;  // per block
constexpr int kMatvecMaxRows = 8;          // rows of x: one mma column each

// A format: the element type, elements per 16-byte load, the type x comes in, and (tf32 formats) the
// widening to fp32. kHalfParts: x comes as the fp16 parts of its scaled values (mma::split_f16, linear.cu's
// u8_prepare_kernel) and the products run on mma.m16n8k16 in fp16; otherwise x is fp32, split into tf32
// parts in the loop, and the weights widen to tf32 for mma.m16n8k8.
struct U8Weights {
  using Elem = uint8_t;
  using XElem = uint16_t;  // fp16 bits
  static constexpr int kPerLoad = 16;
  static constexpr bool kHalfParts = true;
};
struct F16Weights {
  using Elem = __half;
  using XElem = float;
  static constexpr int kPerLoad = 8;
  static constexpr bool kHalfParts = false;
  static __device__ float widen_at(const uint4& p, int i) { return __half2float(reinterpret_cast<const __half*>(&p)[i]); }
};
struct BF16Weights {
  using Elem = __nv_bfloat16;
  using XElem = float;
  static constexpr int kPerLoad = 8;
  static constexpr bool kHalfParts = false;
  static __device__ float widen_at(const uint4& p, int i) { return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(&p)[i]); }
};

// What a row's dot products become: the value itself (fp16/bf16), or the uint8 scheme's factored
// output (math::u8_output, as the CPU computes it); then stored, activated or added to y as asked.
struct PlainOutput {
  ProductOutput out;
  __device__ void operator()(float* dst, int64_t o, int, float dot) const { *dst = out.apply(dot, out.kind == ProductOutput::Add ? *dst : 0.0f, o); }
};
struct U8Output {
  const float *rx, *mx, *sums;  // sums [T x 4]: per row of x, sum x*ry, sum x*my, sum x, and 2^-k (x*ry was scaled by 2^k)
  ProductOutput out;
  __device__ void operator()(float* dst, int64_t o, int t, float dot) const {
    const float* s = sums + 4 * t;
    const float v = math::u8_output(dot * s[3], s[0], s[1], s[2], rx[o], mx[o]);
    *dst = out.apply(v, out.kind == ProductOutput::Add ? *dst : 0.0f, o);
  }
};

// One product of a launch: W [rows x cols] times T rows of x into y. Its columns are cut into slices
// (mma::slices): the warps of one tile's slices sit in one block and add their sums in shared memory,
// in slice order, so the result is deterministic and a narrow product (a 64-row LoRA factor) still
// spreads over many warps. Its blocks start at first_block.
template <typename Output>
struct MatvecJob {
  const void* W;
  int64_t rows, cols;
  const void* x;     // [T x ldx] of the format's XElem: fp32, or with kHalfParts the high parts
  const void* x_lo;  // with kHalfParts, the low parts (ldx apart too)
  int64_t ldx;
  float* y;
  int64_t ldy;
  Output output;
  mma::Slices slices;
  int first_block;
};
template <typename Output>
struct MatvecJobs {
  MatvecJob<Output> job[kMaxGroup];
  int count = 0;
};

// d += A * B for one 16x8x16 step in fp16 (operands in the mma fragment order of kernels/mma_tile.h).
__device__ __forceinline__ void mma_f16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// Codes 2p and 2p + 1 of a word as an fp16 pair: a permute to 1024 + q, one subtract (both exact).
__device__ __forceinline__ uint32_t codes_f16x2(uint32_t word, int p) {
  uint32_t pair;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(pair) : "r"(mma::biased_code_pair(word, p)), "r"(mma::kF16Of1024Pair));
  return pair;
}
__device__ __forceinline__ uint32_t word_at(const uint4& p, int i) { return i == 0 ? p.x : i == 1 ? p.y : i == 2 ? p.z : p.w; }

// Elements c, c + 1, ... of row packed into kWords 32-bit words little-endian, as a vector load lays
// them out, with zeros from column `end` on: the element-by-element form of a load of weights or x.
template <typename T>
__device__ __forceinline__ uint32_t element_bits(T v) { return uint32_t(v); }  // the weights' and fp16 parts' bits
__device__ __forceinline__ uint32_t element_bits(float v) { return __float_as_uint(v); }
template <int kWords, typename T>
__device__ __forceinline__ void pack_words(const T* row, int c, int end, uint32_t (&w)[kWords]) {
  constexpr int kPerWord = 4 / int(sizeof(T));
#pragma unroll
  for (int k = 0; k < kWords; ++k) w[k] = 0;
#pragma unroll
  for (int i = 0; i < kWords * kPerWord; ++i)
    if (c + i < end) w[i / kPerWord] |= element_bits(row[c + i]) << (8 * int(sizeof(T)) * (i % kPerWord));
}

// d += A * B for one 16x8x8 step (operands in the mma fragment order of kernels/mma_tile.h).
__device__ __forceinline__ void mma_tf32(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// A block's ring: per warp kStages rounds of kSteps loads of two rows by 32 lanes, each (round, step,
// row) 512 contiguous bytes of shared memory, lane by lane (conflict-free both ways).
constexpr size_t matvec_ring_bytes(int steps, int stages) { return size_t(kMatvecWarps) * size_t(stages) * size_t(steps) * 2 * 32 * 16; }

// kVector: rows of W and x start on 16 bytes and cols is whole 16-byte loads (the weights then stream
// through the ring); otherwise the same loads are made element by element, into registers.
template <typename Fmt, bool kVector, typename Output, int kSteps, int kStages>
__global__ void __launch_bounds__(kMatvecWarps * 32, 2) matvec_kernel(MatvecJobs<Output> jobs, int T) {
  static_assert(kStages >= 2, "a ring of one round keeps nothing in flight");
  using Elem = typename Fmt::Elem;
  using Bits = std::conditional_t<sizeof(Elem) == 2, uint16_t, uint8_t>;
  constexpr int E = Fmt::kPerLoad;
  constexpr int64_t kStepCols = 4 * E, kRoundCols = kSteps * kStepCols;  // the 4 lanes of a row, one load each
  const MatvecJob<Output> job = pick(jobs.job, jobs.count, int(blockIdx.x));
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, t = lane % 4;
  const int S = job.slices.splits, slice = warp % S;
  const int64_t rows = job.rows, cols = job.cols;
  const int64_t o0 = (int64_t(int(blockIdx.x) - job.first_block) * (kMatvecWarps / S) + warp / S) * 16;
  const int64_t c_begin = mma::slice_begin(job.slices, slice, E), c_next = mma::slice_begin(job.slices, slice + 1, E);
  // A tile past the last row (the last block's) does no work but still meets the block's barrier.
  const int64_t c_end = o0 < rows ? (cols < c_next ? cols : c_next) : c_begin;
  const int64_t last = rows - 1;  // rows past the end read the last one; their sums are dropped
  const int64_t ra = o0 + mma::a_row(lane, 0), rb = o0 + mma::a_row(lane, 1);  // this lane's two tile rows
  const Bits* wa = static_cast<const Bits*>(job.W) + size_t(ra < last ? ra : last) * size_t(cols);
  const Bits* wb = static_cast<const Bits*>(job.W) + size_t(rb < last ? rb : last) * size_t(cols);
  const int rounds = int((c_end - c_begin + kRoundCols - 1) / kRoundCols);  // at most a row's width over 32: far inside an int
  // Columns from here on count from this lane's first load (mma::load_column of round 0, step 0) in
  // 32 bits, a row being far narrower than 2^31: the loop's addresses are then one add each, where
  // 64-bit columns made the address arithmetic a third of its instructions. A load at column c (a
  // whole load: c_end is cols or a step boundary) is inside the slice when c < lane_end.
  const int64_t lane_col = mma::load_column(c_begin, 0, t, E);
  const int lane_end = int(c_end - lane_col);
  const Bits *wa_lane = wa + lane_col, *wb_lane = wb + lane_col;
  auto column = [](int r, int u) { return r * int(kRoundCols) + u * int(kStepCols); };  // load_column(c_begin + r*kRoundCols, u, t, E) - lane_col

  // Ring slot s, step u, row h (0: wa, 1: wb) of this lane.
  extern __shared__ uint4 ring[];
  uint4* const my_ring = ring + size_t(warp) * kStages * kSteps * 2 * 32 + lane;
  auto ring_at = [&](int s, int u, int h) -> uint4& { return my_ring[((s * kSteps + u) * 2 + h) * 32]; };
  const unsigned ring_base = shared_address(my_ring);  // ring_at(0, 0, 0) in the shared space
  // Round r of this lane's two rows into its slot: zeros (nothing read) past the slice.
  auto fill = [&](int r) {
    const int s = mma::ring_slot(r, kStages);
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      const int c = column(r, u);
      const bool in = c < lane_end;
      const unsigned dst = ring_base + unsigned((s * kSteps + u) * 2 * 32 * 16);
      copy_async_16(dst, in ? wa_lane + c : wa, in ? 16u : 0u);
      copy_async_16(dst + 32 * 16, in ? wb_lane + c : wb, in ? 16u : 0u);
    }
  };
  // Nothing writes weights: the first kStages - 1 rounds start on their way while the kernel before
  // (a chained launch) finishes. One commit group per round, empty ones too, so that group g is round
  // g (the schedule is mma::ring_*, which tests/test_mma_tile.cpp plays through).
  if (kVector) {
#pragma unroll
    for (int r = 0; r < kStages - 1; ++r) {
      if (r < rounds) fill(r);
      commit_async();
    }
  }
  chained_start();

  const bool has_x = mma::b_col(lane) < T;  // the lane's row of x (T <= 8)
  const size_t x_row = size_t(has_x ? mma::b_col(lane) : 0) * size_t(job.ldx);
  using XElem = typename Fmt::XElem;
  const XElem* x_lane = static_cast<const XElem*>(job.x) + x_row + lane_col;
  const XElem* x_lo_lane = Fmt::kHalfParts ? static_cast<const XElem*>(job.x_lo) + x_row + lane_col : nullptr;
  // 32 bytes of this lane's row of x from column c as 8 words: eight fp32 activations, or sixteen fp16
  // parts (zeros past the slice, or for rows x does not have). Vector: a predicated pair of loads, no branch.
  auto load_x = [&](const XElem* row, int c, uint32_t (&v)[8]) {
    if (kVector) {
      uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
      if (has_x && c < lane_end) {
        lo = __ldg(reinterpret_cast<const uint4*>(row + c));
        hi = __ldg(reinterpret_cast<const uint4*>(row + c) + 1);
      }
      v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w, v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
    } else {
      pack_words(row, c, has_x ? lane_end : 0, v);
    }
  };
  // Four independent accumulation chains (step parity x the hi and lo parts of x), summed in a fixed
  // order at the end: one chain made every mma of a round wait for the one before it.
  float acc[2][2][4] = {};
  auto multiply_round = [&](int r, const uint4 (&pa)[kSteps], const uint4 (&pb)[kSteps]) {
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      if constexpr (Fmt::kHalfParts) {
        // A load of 16 codes a row is four k16-steps; its words become A with a permute and a subtract
        // per code pair, and x's parts are B as they come.
        uint32_t xh[8], xl[8];
        load_x(x_lane, column(r, u), xh);
        load_x(x_lo_lane, column(r, u), xl);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          uint32_t a[4];
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const int e = mma::a16_element(j, q, 0);  // the pair's first code: word e / 4, pair (e % 4) / 2
            a[q] = codes_f16x2(word_at(q % 2 ? pb[u] : pa[u], e / 4), (e % 4) / 2);
          }
          const int b0 = mma::b16_element(j, 0, 0) / 2, b1 = mma::b16_element(j, 1, 0) / 2;  // words of x's halves
          mma_f16(acc[u % 2][0], a[0], a[1], a[2], a[3], xh[b0], xh[b1]);
          mma_f16(acc[u % 2][1], a[0], a[1], a[2], a[3], xl[b0], xl[b1]);
        }
      } else {
#pragma unroll
        for (int h = 0; h < E; h += 8) {
          uint32_t xv[8];  // x is cached (every warp reads it): loaded eight at a time, it holds few registers
          load_x(x_lane, column(r, u) + h, xv);
#pragma unroll
          for (int j = h / 2; j < h / 2 + 4; ++j) {  // k-steps j of the load use its elements 2j and 2j + 1
            uint32_t a[4];
#pragma unroll
            for (int q = 0; q < 4; ++q) a[q] = __float_as_uint(Fmt::widen_at(q % 2 ? pb[u] : pa[u], mma::a_element(j, q)));
            const mma::Tf32Parts p0 = mma::split_tf32(__uint_as_float(xv[mma::b_element(j, 0) - h])),
                                 p1 = mma::split_tf32(__uint_as_float(xv[mma::b_element(j, 1) - h]));
            mma_tf32(acc[u % 2][0], a[0], a[1], a[2], a[3], __float_as_uint(p0.hi), __float_as_uint(p1.hi));
            mma_tf32(acc[u % 2][1], a[0], a[1], a[2], a[3], __float_as_uint(p0.lo), __float_as_uint(p1.lo));
          }
        }
      }
    }
  };

  if (kVector) {
    for (int r = 0; r < rounds; ++r) {
      wait_async<mma::ring_pending(kStages)>();  // round r has landed (groups complete in order)
      // The refill goes to the slot round r - 1 was read from; every lane has read it.
      __syncwarp();
      if (mma::ring_refill(r, kStages) < rounds) fill(mma::ring_refill(r, kStages));
      commit_async();
      const int slot = mma::ring_slot(r, kStages);
      uint4 pa[kSteps], pb[kSteps];
#pragma unroll
      for (int u = 0; u < kSteps; ++u) pa[u] = ring_at(slot, u, 0), pb[u] = ring_at(slot, u, 1);
      multiply_round(r, pa, pb);
    }
  } else {  // the same 16 bytes, element by element (little-endian, as the vector load lays them)
    for (int r = 0; r < rounds; ++r) {
      uint4 pa[kSteps], pb[kSteps];
#pragma unroll
      for (int u = 0; u < kSteps; ++u) {
        uint32_t w[2][4];
        pack_words(wa_lane, column(r, u), lane_end, w[0]);
        pack_words(wb_lane, column(r, u), lane_end, w[1]);
        pa[u] = make_uint4(w[0][0], w[0][1], w[0][2], w[0][3]);
        pb[u] = make_uint4(w[1][0], w[1][1], w[1][2], w[1][3]);
      }
      multiply_round(r, pa, pb);
    }
  }

  float sum[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) sum[r] = (acc[0][0][r] + acc[0][1][r]) + (acc[1][0][r] + acc[1][1][r]);
  if (S > 1) {  // S is the block's: every warp of it takes this branch or none does
    __shared__ float partial[kMatvecWarps][4][32];
#pragma unroll
    for (int r = 0; r < 4; ++r) partial[warp][r][lane] = sum[r];
    __syncthreads();
    if (slice != 0) return;
#pragma unroll
    for (int r = 0; r < 4; ++r)
      for (int s = 1; s < S; ++s) sum[r] += partial[warp + s][r][lane];
  }
  // Accumulator r: tile row c_row, x row c_col.
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int tok = mma::c_col(lane, r);
    const int64_t o = o0 + mma::c_row(lane, r);
    if (tok < T && o < rows) job.output(job.y + size_t(tok) * size_t(job.ldy) + size_t(o), o, tok, sum[r]);
  }
}

// Launches the products of `jobs` (one weight format) over T rows of x at the given pipeline depth;
// kVector as for the kernel.
template <typename Fmt, bool kVector, typename Output, int kSteps, int kStages>
void launch_matvec(MatvecJobs<Output>& jobs, int T) {
  const int64_t blocks = lay_out_blocks(jobs, [](MatvecJob<Output>& j) {
    j.slices = mma::slices(j.cols, Fmt::kPerLoad, kSteps);
    const int64_t tiles = (j.rows + 15) / 16, tiles_per_block = kMatvecWarps / j.slices.splits;
    return (tiles + tiles_per_block - 1) / tiles_per_block;
  });
  if (blocks == 0) return;
  auto* kernel = matvec_kernel<Fmt, kVector, Output, kSteps, kStages>;
  constexpr size_t ring = kVector ? matvec_ring_bytes(kSteps, kStages) : 0;
  // The ring's opt-in, once per device. Without it a block's static and dynamic shared memory
  // together may not pass 48 KiB, so a ring of exactly 48 KiB beside the kernel's 4 KiB of partial
  // sums would not launch: opt in for every ring, not only for rings above 48 KiB.
  if (ring > 0) {
    static std::mutex mu;
    static std::set<int> opted_in;
    int dev = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    std::lock_guard<std::mutex> lock(mu);
    if (!opted_in.count(dev)) {
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(ring)), "cudaFuncSetAttribute (matvec ring)");
      opted_in.insert(dev);
    }
  }
  chain_with_shared(kernel, unsigned(blocks), kMatvecWarps * 32, ring, "matvec", jobs, T);
}

// The products' launch; `vector`: every product's rows and x rows start on 16 bytes and its width is
// whole 16-byte loads.
template <typename Fmt, typename Output>
void matvec(MatvecJobs<Output>& jobs, int T, bool vector) {
  if (vector)
    launch_matvec<Fmt, true, Output, kMatvecSteps, kMatvecStages>(jobs, T);
  else
    launch_matvec<Fmt, false, Output, kMatvecSteps, kMatvecStages>(jobs, T);
}

}  // namespace
}  // namespace skein::cuda
