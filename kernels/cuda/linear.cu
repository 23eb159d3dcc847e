// Matrix products. Up to 8 rows of x (decode), fp16, bf16 and uint8 weights go through one
// tensor-core kernel with activations kept to fp32 accuracy, as the CPU backend computes (x split into
// 16-bit parts, mma::split; uint8 factored as the CPU does, math::u8_output). Beyond that cuBLAS: fp32
// by sgemm, fp16/bf16 by GemmEx on tensor cores (activations rounded to the weight type, fp32
// accumulation), uint8 dequantized to fp16 row tiles with the official element formula, then GemmEx. A
// set of independent products (linears) shares launches: per weight format one split launch and one
// tensor-core launch, or one rounding launch for all the inputs of its GEMMs. Everything runs on the
// device's one stream.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <type_traits>
#include <vector>

#include "kernels/cuda/chained_launch.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/mma_tile.h"
#include "kernels/rwkv_math.h"

namespace skein::cuda {

namespace {

constexpr int kMatvecMaxRows = 8;  // rows of x up to which half and uint8 products use matvec_kernel (one mma column each)
constexpr int64_t kDequantTileRows = 4096;  // U8 rows dequantized at once for GemmEx

struct DeviceContext {
  cublasHandle_t blas = nullptr;
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
  void* workspace = nullptr;
};
constexpr size_t kBlasWorkspace = size_t(32) << 20;  // NVIDIA's advice for Hopper

DeviceContext& context() {
  static std::mutex mu;
  static std::map<int, DeviceContext> contexts;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(mu);
  DeviceContext& c = contexts[dev];
  if (!c.blas) {
    check_blas(cublasCreate(&c.blas), "cublasCreate");
    check_blas(cublasSetStream(c.blas, stream()), "cublasSetStream");
    // A workspace of our own, so products recorded into a CUDA graph never allocate.
    check(cudaMalloc(&c.workspace, kBlasWorkspace), "cudaMalloc (cuBLAS workspace)");
    check_blas(cublasSetWorkspace(c.blas, c.workspace, kBlasWorkspace), "cublasSetWorkspace");
  }
  return c;
}

// Device scratch of at least `bytes` (grown, never shrunk): the rounded activations and dequantized tiles.
void* scratch(DeviceContext& c, size_t bytes) {
  if (c.scratch_bytes < bytes) {
    // Growing inside a graph capture would leave the scratch owned by a graph that never runs: refuse,
    // and the recording falls back to launching directly (which grows it for the next recording).
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    check(cudaStreamIsCapturing(stream(), &capturing), "cudaStreamIsCapturing");
    if (capturing != cudaStreamCaptureStatusNone) fail("CUDA: product scratch must grow while a step is recorded");
    free_bytes(c.scratch);  // stream-ordered: products already enqueued keep reading the old block
    c.scratch = alloc_bytes(bytes);
    c.scratch_bytes = bytes;
    bump_workspace_epoch();  // recorded graphs that used the old block are stale
  }
  return c.scratch;
}

template <typename E>
__device__ E narrow(float v);
template <>
__device__ __half narrow<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __nv_bfloat16 narrow<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Kernel parameters are read with constant indices only (a dynamic index would copy the whole table
// into local memory): a block finds its entry of a small table by unrolled selection.
template <typename Entry, int kMax>
__device__ Entry pick(const Entry (&table)[kMax], int count, int index) {
  Entry e = table[0];
#pragma unroll
  for (int i = 1; i < kMax; ++i)
    if (i < count && index >= table[i].first_block) e = table[i];
  return e;
}

constexpr int kMaxGroup = 8;  // products per launch: a v7 layer's r, k, v and four LoRA inputs

// T rows of fp32 activations rounded to the weight type for GemmEx, several inputs per launch (each
// input's blocks after the previous input's).
struct RoundJob {
  const float* x;
  int64_t ldx, cols;
  void* out;  // [T x cols] of the weight type
  int first_block;
};
struct RoundJobs {
  RoundJob job[kMaxGroup];
  int count = 0;
};
template <typename E>
__global__ void round_rows_kernel(RoundJobs jobs, int T) {
  chained_start();
  const RoundJob j = pick(jobs.job, jobs.count, int(blockIdx.x));
  const size_t i = size_t(int(blockIdx.x) - j.first_block) * blockDim.x + threadIdx.x;
  if (i >= size_t(T) * size_t(j.cols)) return;
  const size_t t = i / size_t(j.cols), c = i % size_t(j.cols);
  static_cast<E*>(j.out)[i] = narrow<E>(j.x[t * size_t(j.ldx) + c]);
}

// A tile of uint8 rows as fp16 through the official element formula, 16 consecutive weights per thread.
// With kVector (rows of whole 16-byte loads, 16-byte aligned column scales) that is one load of codes,
// the column scales and offsets as float4s (cached: every row reads the same) and two 16-byte stores,
// where an element per thread moved the tile at about a sixth of the memory's speed (H200).
__device__ __forceinline__ uint32_t two_halves(float lo, float hi) {
  return uint32_t(__half_as_ushort(__float2half_rn(lo))) | uint32_t(__half_as_ushort(__float2half_rn(hi))) << 16;
}
template <bool kVector>
__global__ void dequant_rows_kernel(const uint8_t* W, const float* rx, const float* mx, const float* ry, const float* my, int64_t r0,
                                    int64_t cols, size_t n, __half* out) {
  chained_start();
  const size_t e = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) * 16;
  if (e >= n) return;
  if (kVector) {
    const int64_t o = r0 + int64_t(e / size_t(cols)), c = int64_t(e % size_t(cols));
    const uint4 q = __ldg(reinterpret_cast<const uint4*>(W + size_t(o) * size_t(cols) + size_t(c)));
    const float rxo = rx[o], mxo = mx[o];
    uint32_t h[8];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const unsigned word = k == 0 ? q.x : k == 1 ? q.y : k == 2 ? q.z : q.w;
      const float4 ry4 = __ldg(reinterpret_cast<const float4*>(ry + c) + k), my4 = __ldg(reinterpret_cast<const float4*>(my + c) + k);
      h[2 * k] = two_halves(math::dequant_u8(uint8_t(word), rxo, mxo, ry4.x, my4.x), math::dequant_u8(uint8_t(word >> 8), rxo, mxo, ry4.y, my4.y));
      h[2 * k + 1] =
          two_halves(math::dequant_u8(uint8_t(word >> 16), rxo, mxo, ry4.z, my4.z), math::dequant_u8(uint8_t(word >> 24), rxo, mxo, ry4.w, my4.w));
    }
    uint4* dst = reinterpret_cast<uint4*>(out + e);
    dst[0] = make_uint4(h[0], h[1], h[2], h[3]);
    dst[1] = make_uint4(h[4], h[5], h[6], h[7]);
  } else {
    for (size_t i = e; i < e + 16 && i < n; ++i) {
      const int64_t o = r0 + int64_t(i / size_t(cols)), c = int64_t(i % size_t(cols));
      out[i] = __float2half_rn(math::dequant_u8(W[size_t(o) * size_t(cols) + size_t(c)], rx[o], mx[o], ry[c], my[c]));
    }
  }
}

// A weight format on the tensor cores: its element, elements per 16-byte load, the 16-bit operand type
// its elements widen to exactly, and that widening of one load into E / 2 registers (two elements each).
struct U8Weights {
  using Elem = uint8_t;
  static constexpr int kPerLoad = 16;
  static constexpr bool kBf16 = false;
  // Codes as fp16, exactly: the bytes (q, 0x64) are the half 1024 + q, so one byte permute builds two
  // of them and one half2 subtract of 1024 leaves q, where a conversion per code ran at a quarter rate.
  static __device__ void widen(const uint4& p, uint32_t (&h)[kPerLoad / 2]) {
    const uint32_t w[4] = {p.x, p.y, p.z, p.w};
    const __half2 k1024 = __floats2half2_rn(1024.0f, 1024.0f);
#pragma unroll
    for (int k = 0; k < 4; ++k)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const uint32_t biased = __byte_perm(w[k], 0x64646464u, i ? 0x4342u : 0x4140u);
        const __half2 q = __hsub2(*reinterpret_cast<const __half2*>(&biased), k1024);
        h[2 * k + i] = *reinterpret_cast<const uint32_t*>(&q);
      }
  }
};
template <typename E, bool kIsBf16>
struct HalfWeights {  // fp16 and bf16 weights are operands as they are
  using Elem = E;
  static constexpr int kPerLoad = 8;
  static constexpr bool kBf16 = kIsBf16;
  static __device__ void widen(const uint4& p, uint32_t (&h)[kPerLoad / 2]) { h[0] = p.x, h[1] = p.y, h[2] = p.z, h[3] = p.w; }
};
using F16Weights = HalfWeights<__half, false>;
using BF16Weights = HalfWeights<__nv_bfloat16, true>;

// Decode products take x as 16-bit parts (mma::split): first, each row t of each product's x is scaled
// and split into the scratch, one block per row and input. For uint8 the row is xr = x*ry, the CPU's
// factoring (math::u8_output), and the block also sums xr, x*my and x (in double).
struct SplitJob {
  const float* x;
  int64_t ldx, cols;
  const float *ry, *my;  // uint8 only, else null
  uint16_t* parts;       // part p of row t at parts + p * part_stride + t * cols
  size_t part_stride;
  float* scales;  // [T]: 2^-e, what the row's sums are multiplied by
  float* sums;    // [T x 3], uint8 only
  int first_block;  // blockIdx.y of this input (its index)
};
struct SplitJobs {
  SplitJob job[kMaxGroup];
  int count = 0;
};
// A row of x is a decode step's critical path (the products wait for it), so latency is what counts:
// a thread issues all its loads at once (kSplitPer values, kept in registers for the second pass), where
// a loop of one load per round trip took about 30 us for a 16384-wide row (H200). Wider rows, rare,
// loop over kSplitThreads * kSplitPer columns at a time, and read each value twice.
constexpr int kSplitThreads = 1024, kSplitPer = 16;
template <bool kBf16>
__global__ void __launch_bounds__(kSplitThreads) split_rows_kernel(SplitJobs jobs) {
  chained_start();
  const SplitJob j = pick(jobs.job, jobs.count, int(blockIdx.y));
  const int t = blockIdx.x, tid = int(threadIdx.x);
  const float* xt = j.x + size_t(t) * size_t(j.ldx);
  const bool u8 = j.ry != nullptr;  // the block's: uniform branches
  constexpr int64_t kSpan = int64_t(kSplitThreads) * kSplitPer;
  auto value = [&](int64_t i) { return u8 ? xt[i] * j.ry[i] : xt[i]; };
  float v[kSplitPer];
  float top = 0.0f;
  double a = 0, b = 0, c = 0;
  for (int64_t c0 = 0; c0 < j.cols; c0 += kSpan) {
#pragma unroll
    for (int k = 0; k < kSplitPer; ++k) {
      const int64_t i = c0 + tid + int64_t(k) * kSplitThreads;
      v[k] = i < j.cols ? value(i) : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < kSplitPer; ++k) top = fmaxf(top, fabsf(v[k]));
    if (u8)
#pragma unroll
      for (int k = 0; k < kSplitPer; ++k) {
        const int64_t i = c0 + tid + int64_t(k) * kSplitThreads;
        if (i >= j.cols) break;
        a += v[k];
        b += double(xt[i]) * j.my[i];
        c += xt[i];
      }
  }
  __shared__ float tops[kSplitThreads / 32];
  __shared__ double part[3][kSplitThreads / 32];
  const int lane = tid % 32, warp = tid / 32;
  for (int off = 16; off > 0; off /= 2) top = fmaxf(top, __shfl_xor_sync(0xffffffffu, top, off));
  if (u8)
    for (int off = 16; off > 0; off /= 2) {
      a += __shfl_xor_sync(0xffffffffu, a, off);
      b += __shfl_xor_sync(0xffffffffu, b, off);
      c += __shfl_xor_sync(0xffffffffu, c, off);
    }
  if (lane == 0) tops[warp] = top, part[0][warp] = a, part[1][warp] = b, part[2][warp] = c;
  __syncthreads();
  top = tops[lane];  // a warp's 32 lanes take the 32 warps' maxima
  for (int off = 16; off > 0; off /= 2) top = fmaxf(top, __shfl_xor_sync(0xffffffffu, top, off));
  const int e = mma::row_exponent(top);
  const float scale = mma::pow2(e);
  uint16_t* out = j.parts + size_t(t) * size_t(j.cols);
  for (int64_t c0 = 0; c0 < j.cols; c0 += kSpan) {
    if (j.cols > kSpan)  // a wide row: this span's values again (v holds the last span's)
#pragma unroll
      for (int k = 0; k < kSplitPer; ++k) {
        const int64_t i = c0 + tid + int64_t(k) * kSplitThreads;
        v[k] = i < j.cols ? value(i) : 0.0f;
      }
#pragma unroll
    for (int k = 0; k < kSplitPer; ++k) {
      const int64_t i = c0 + tid + int64_t(k) * kSplitThreads;
      if (i >= j.cols) break;
      uint16_t p[mma::Parts<kBf16>::kCount];
      mma::split<kBf16>(v[k] * scale, p);
#pragma unroll
      for (int q = 0; q < mma::Parts<kBf16>::kCount; ++q) out[size_t(q) * j.part_stride + size_t(i)] = p[q];
    }
  }
  if (tid == 0) {
    j.scales[t] = mma::pow2(-e);
    if (u8) {
      double s[3] = {0, 0, 0};
      for (int w = 0; w < kSplitThreads / 32; ++w)
        for (int k = 0; k < 3; ++k) s[k] += part[k][w];
      for (int k = 0; k < 3; ++k) j.sums[t * 3 + k] = float(s[k]);
    }
  }
}

// Decode-sized products (up to kMatvecMaxRows rows of x) on the tensor cores, one kernel for every
// weight format. A warp multiplies a 16-row tile of W by up to 8 rows of x with mma.m16n8k16: the tile is
// the A operand as its 16-bit elements (fp16 and bf16 weights as stored, uint8 codes widened exactly),
// the parts of the rows of x are B's columns, once per part, and the sums are fp32. The
// multiply-adds are free next to the memory traffic, so a warp can afford 16 rows (each activation it
// loads serves 16 weights) and a batch of 8 costs what a batch of 1 does. A 16-byte load of fp16
// weights is two instructions per part and nothing else: the loop's work per weight byte is what
// bounded the earlier tf32 form (widening every weight and splitting every activation in the loop), whose
// uint8 products ran at half the bytes per second of fp16.
//
// No shuffles: each lane's own 16-byte loads of two tile rows (and the same columns of its row of x's
// parts) are its operands, A and B agreeing on which column sits at each k (kernels/mma_tile.h has the
// layout as functions the CPU tests multiply through). The 4 lanes of a row read 64 contiguous bytes.
//
// What a row's dot products become: the value itself (fp16/bf16), or the uint8 scheme's factored
// output; then stored, activated or added to y as the caller asked.
struct PlainOutput {
  ProductOutput out;
  __device__ void operator()(float* dst, int64_t o, int, float dot) const { *dst = out.apply(dot, out.kind == ProductOutput::Add ? *dst : 0.0f, o); }
};
struct U8Output {
  const float *rx, *mx, *sums;  // sums [T x 3] from split_rows_kernel
  ProductOutput out;
  __device__ void operator()(float* dst, int64_t o, int t, float dot) const {
    const float v = math::u8_output(dot, sums[3 * t], sums[3 * t + 1], sums[3 * t + 2], rx[o], mx[o]);
    *dst = out.apply(v, out.kind == ProductOutput::Add ? *dst : 0.0f, o);
  }
};

// One product of a launch: W [rows x cols] times T rows of x (as parts, rows cols apart) into y. Its
// columns are cut into slices (mma::slices): the warps of one tile's slices sit in one block and add
// their sums in shared memory, in slice order, so the result is deterministic and a narrow product (a
// 64-row LoRA factor) still spreads over many warps. Its blocks start at first_block.
template <typename Output>
struct MatvecJob {
  const void* W;
  int64_t rows, cols;
  const uint16_t* parts;
  size_t part_stride;
  const float* scales;
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

constexpr int kMatvecWarps = mma::kWarps;  // per block
// Steps per round: each lane issues this many 16-byte loads of each of its two rows before any
// arithmetic, 4 KiB per warp in flight.
constexpr int kMatvecSteps = mma::kSteps;

// d += A * B for one 16x8x16 step (operands in the mma fragment order described above).
template <bool kBf16>
__device__ __forceinline__ void mma_16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  if constexpr (kBf16)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// kVector: rows of W start on 16 bytes and cols is whole 16-byte loads (so are the parts' rows);
// otherwise the same loads are made element by element.
template <typename Fmt, bool kVector, typename Output>
__global__ void __launch_bounds__(kMatvecWarps * 32, kVector ? 3 : 1) matvec_kernel(MatvecJobs<Output> jobs, int T) {
  using Elem = typename Fmt::Elem;
  using Bits = std::conditional_t<sizeof(Elem) == 2, uint16_t, uint8_t>;
  constexpr int E = Fmt::kPerLoad, kParts = mma::Parts<Fmt::kBf16>::kCount;
  constexpr int64_t kStepCols = 4 * E;  // the 4 lanes of a row, one load each
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
  const bool has_x = mma::b_col(lane) < T;  // the lane's row of x (T <= 8)
  const uint16_t* xg = job.parts + size_t(has_x ? mma::b_col(lane) : 0) * size_t(cols);
  // Nothing writes weights: the first round of this warp's rows streams into L2 while the kernel before
  // (a chained launch: the split) finishes. Lane t fetches step t of both rows (a round is 4 steps).
  static_assert(kMatvecSteps == 4);
  if (const int64_t c = c_begin + t * kStepCols; c < c_end) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(wa + c));
    asm volatile("prefetch.global.L2 [%0];" ::"l"(wb + c));
  }
  chained_start();
  auto load_weights = [&](const Bits* row, int64_t c, uint4& p) {
    if (kVector) {
      p = c < c_end ? __ldg(reinterpret_cast<const uint4*>(row + c)) : make_uint4(0, 0, 0, 0);
    } else {  // the same 16 bytes, element by element (little-endian, as the vector load lays them)
      uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
      for (int i = 0; i < E; ++i)
        if (c + i < c_end) w[i * int(sizeof(Bits)) / 4] |= uint32_t(row[c + i]) << (8 * (i * int(sizeof(Bits)) % 4));
      p = make_uint4(w[0], w[1], w[2], w[3]);
    }
  };
  // Part k of this lane's row of x at the E columns from c, as E / 2 registers (zeros past the slice,
  // or for rows x does not have).
  auto load_x = [&](int k, int64_t c, uint32_t (&v)[E / 2]) {
    const uint16_t* src = xg + size_t(k) * job.part_stride;
    if (kVector && has_x && c < c_end) {
#pragma unroll
      for (int i = 0; i < E / 8; ++i) {
        const uint4 q = __ldg(reinterpret_cast<const uint4*>(src + c) + i);
        v[4 * i] = q.x, v[4 * i + 1] = q.y, v[4 * i + 2] = q.z, v[4 * i + 3] = q.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < E / 2; ++i) {
        const uint32_t lo = has_x && c + 2 * i < c_end ? src[c + 2 * i] : 0u, hi = has_x && c + 2 * i + 1 < c_end ? src[c + 2 * i + 1] : 0u;
        v[i] = lo | hi << 16;
      }
    }
  };
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t base = c_begin; base < c_end; base += kMatvecSteps * kStepCols) {
    uint4 pa[kMatvecSteps], pb[kMatvecSteps];
#pragma unroll
    for (int u = 0; u < kMatvecSteps; ++u) {
      load_weights(wa, mma::load_column(base, u, t, E), pa[u]);
      load_weights(wb, mma::load_column(base, u, t, E), pb[u]);
    }
#pragma unroll
    for (int u = 0; u < kMatvecSteps; ++u) {
      uint32_t a[E / 2], b[E / 2];
      Fmt::widen(pa[u], a);
      Fmt::widen(pb[u], b);
#pragma unroll
      for (int k = 0; k < kParts; ++k) {
        uint32_t xv[E / 2];  // x is cached (every warp reads it)
        load_x(k, mma::load_column(base, u, t, E), xv);
        // Instruction m: A registers (row a, row b, row a, row b) = registers 2m, 2m, 2m + 1, 2m + 1 of
        // the rows (mma::a_element), B = registers 2m, 2m + 1 of x (mma::b_element).
#pragma unroll
        for (int m = 0; m < E / 4; ++m) mma_16<Fmt::kBf16>(acc, a[2 * m], b[2 * m], a[2 * m + 1], b[2 * m + 1], xv[2 * m], xv[2 * m + 1]);
      }
    }
  }
  if (S > 1) {  // S is the block's: every warp of it takes this branch or none does
    __shared__ float partial[kMatvecWarps][4][32];
#pragma unroll
    for (int r = 0; r < 4; ++r) partial[warp][r][lane] = acc[r];
    __syncthreads();
    if (slice != 0) return;
#pragma unroll
    for (int r = 0; r < 4; ++r)
      for (int s = 1; s < S; ++s) acc[r] += partial[warp + s][r][lane];
  }
  // Accumulator r: tile row c_row, x row c_col; the row's scale undone (a power of two).
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int tok = mma::c_col(lane, r);
    const int64_t o = o0 + mma::c_row(lane, r);
    if (tok < T && o < rows) job.output(job.y + size_t(tok) * size_t(job.ldy) + size_t(o), o, tok, acc[r] * job.scales[tok]);
  }
}

// `vector`: every product's rows start on 16 bytes and its width is whole 16-byte loads.
template <typename Fmt, typename Output>
void matvec(MatvecJobs<Output>& jobs, int T, bool vector) {
  int64_t blocks = 0;
  for (int i = 0; i < jobs.count; ++i) {
    MatvecJob<Output>& j = jobs.job[i];
    j.slices = mma::slices(j.cols, Fmt::kPerLoad);
    j.first_block = int(blocks);
    const int64_t tiles = (j.rows + 15) / 16, tiles_per_block = kMatvecWarps / j.slices.splits;
    blocks += (tiles + tiles_per_block - 1) / tiles_per_block;
  }
  if (blocks == 0) return;
  if (vector)
    chain(matvec_kernel<Fmt, true, Output>, unsigned(blocks), kMatvecWarps * 32, "matvec", jobs, T);
  else
    chain(matvec_kernel<Fmt, false, Output>, unsigned(blocks), kMatvecWarps * 32, "matvec", jobs, T);
}

// beta 1 adds the products to y (ProductOutput::Add), 0 stores them.
void gemm_half(cudaDataType type, const void* W, int64_t rows, int64_t cols, const void* x16, float* y, int64_t ldy, int T, float beta) {
  const float one = 1.0f;
  // Column-major view: y^T [rows x T] = W^T' [rows x cols] * x^T [cols x T].
  check_blas(cublasGemmEx(context().blas, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), T, int(cols), &one, W, type, int(cols), x16, type, int(cols),
                          &beta, y, CUDA_R_32F, int(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "GemmEx");
}

// cuBLAS stores or adds; an activation (and its bias) is a pass over the results afterwards.
void activate_after_blas(const LinearJob& j, int T) {
  if (j.out.kind == ProductOutput::Activate) activate_rows(j.out.op, j.y, T, j.rows, j.ldy, j.out.bias);
}

template <typename E>
void round_rows(RoundJobs& jobs, int T) {
  int64_t blocks = 0;
  for (int i = 0; i < jobs.count; ++i) {
    jobs.job[i].first_block = int(blocks);
    blocks += (int64_t(T) * jobs.job[i].cols + 255) / 256;
  }
  if (blocks > 0) chain(round_rows_kernel<E>, unsigned(blocks), 256, "round activations", jobs, T);
}

size_t aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

// x rounded to E at the start of the scratch.
template <typename E>
const void* round_activations(DeviceContext& c, const float* x, int64_t ldx, int64_t cols, int T) {
  RoundJobs one;
  one.job[one.count++] = {x, ldx, cols, scratch(c, size_t(T) * size_t(cols) * sizeof(E)), 0};
  round_rows<E>(one, T);
  return one.job[0].out;
}

// Large fp16/bf16 products beyond kMatvecMaxRows rows: every distinct input of up to kMaxGroup products
// rounded in one launch (a LoRA often reads a large product's input), then a GemmEx each.
template <typename E>
void half_gemms(cudaDataType type, const std::vector<const LinearJob*>& group, int T) {
  DeviceContext& c = context();
  for (size_t first = 0; first < group.size(); first += kMaxGroup) {
    const size_t last = std::min(group.size(), first + kMaxGroup);
    RoundJobs inputs;
    std::vector<int> input_of;
    std::vector<size_t> offset;
    size_t bytes = 0;
    for (size_t i = first; i < last; ++i) {
      const LinearJob& j = *group[i];
      int k = 0;
      while (k < inputs.count && !(inputs.job[k].x == j.x && inputs.job[k].ldx == j.ldx && inputs.job[k].cols == j.cols)) ++k;
      if (k == inputs.count) {
        inputs.job[inputs.count++] = {j.x, j.ldx, j.cols, nullptr, 0};
        offset.push_back(bytes);
        bytes += aligned(size_t(T) * size_t(j.cols) * sizeof(E));
      }
      input_of.push_back(k);
    }
    char* base = static_cast<char*>(scratch(c, bytes));  // sized before any pointer into it is taken
    for (int k = 0; k < inputs.count; ++k) inputs.job[k].out = base + offset[size_t(k)];
    round_rows<E>(inputs, T);
    for (size_t i = first; i < last; ++i) {
      const LinearJob& j = *group[i];
      gemm_half(type, j.W, j.rows, j.cols, inputs.job[input_of[i - first]].out, j.y, j.ldy, T, j.out.kind == ProductOutput::Add ? 1.0f : 0.0f);
      activate_after_blas(j, T);
    }
  }
}

// 16-byte loads of weights need every row to start on 16 bytes (the kernel's parts of x are laid out so).
bool vector_weights(const LinearJob& j, int elems_per_load) {
  return j.cols % elems_per_load == 0 && reinterpret_cast<uintptr_t>(j.W) % 16 == 0;
}

// An fp32 product (any T) or a large uint8 one beyond kMatvecMaxRows rows, through cuBLAS.
void blas_product(const LinearJob& j, int T) {
  DeviceContext& c = context();
  const float one = 1.0f, beta = j.out.kind == ProductOutput::Add ? 1.0f : 0.0f;
  switch (j.type) {
    case WeightType::F32:
      check_blas(cublasSgemm(c.blas, CUBLAS_OP_T, CUBLAS_OP_N, int(j.rows), T, int(j.cols), &one, static_cast<const float*>(j.W), int(j.cols), j.x,
                             int(j.ldx), &beta, j.y, int(j.ldy)),
                 "sgemm");
      break;
    case WeightType::F16:
    case WeightType::BF16: fail("internal: half-precision products go through half_gemms");
    case WeightType::U8: {
      // x rounded once at the start of the scratch, the dequantized tile after it (sized first, so the
      // scratch does not move under x).
      const auto* q = static_cast<const uint8_t*>(j.W);
      size_t x_bytes = aligned(size_t(T) * size_t(j.cols) * sizeof(__half));
      int64_t tile_rows = std::min(kDequantTileRows, j.rows);
      char* base = static_cast<char*>(scratch(c, x_bytes + size_t(tile_rows) * size_t(j.cols) * sizeof(__half)));
      const void* x16 = round_activations<__half>(c, j.x, j.ldx, j.cols, T);
      auto* tile = reinterpret_cast<__half*>(base + x_bytes);
      const bool vector = vector_weights(j, U8Weights::kPerLoad) && (reinterpret_cast<uintptr_t>(j.ry) | reinterpret_cast<uintptr_t>(j.my)) % 16 == 0;
      for (int64_t r0 = 0; r0 < j.rows; r0 += tile_rows) {
        int64_t n_rows = std::min(tile_rows, j.rows - r0);
        size_t n = size_t(n_rows) * size_t(j.cols);
        const unsigned blocks = unsigned((n + 16 * 256 - 1) / (16 * 256));
        if (vector)
          chain(dequant_rows_kernel<true>, blocks, 256, "dequant rows", q, j.rx, j.mx, j.ry, j.my, r0, j.cols, n, tile);
        else
          chain(dequant_rows_kernel<false>, blocks, 256, "dequant rows", q, j.rx, j.mx, j.ry, j.my, r0, j.cols, n, tile);
        gemm_half(CUDA_R_16F, tile, n_rows, j.cols, x16, j.y + r0, j.ldy, T, beta);
      }
      break;
    }
  }
  activate_after_blas(j, T);
}

// Products of one weight format on the tensor-core kernel, up to kMaxGroup per launch pair: one
// launch splits every distinct row of x into parts in the scratch (uint8: every product's xr, with its
// sums), one streams the weights.
template <typename Fmt>
void matvecs(const std::vector<const LinearJob*>& group, int T, bool vector) {
  constexpr bool kU8 = std::is_same_v<Fmt, U8Weights>;
  constexpr int kParts = mma::Parts<Fmt::kBf16>::kCount;
  using Output = std::conditional_t<kU8, U8Output, PlainOutput>;
  DeviceContext& c = context();
  for (size_t first = 0; first < group.size(); first += kMaxGroup) {
    const size_t last = std::min(group.size(), first + kMaxGroup);
    SplitJobs splits;
    std::vector<int> input_of;
    std::vector<size_t> offset;  // each input's parts, then its scales and sums, in one scratch block
    size_t bytes = 0;
    for (size_t i = first; i < last; ++i) {
      const LinearJob& j = *group[i];
      int k = 0;  // a LoRA often reads a large product's input: split once (xr differs per uint8 product)
      while (!kU8 && k < splits.count && !(splits.job[k].x == j.x && splits.job[k].ldx == j.ldx && splits.job[k].cols == j.cols)) ++k;
      if (kU8 || k == splits.count) {
        k = splits.count++;
        const size_t stride = aligned(size_t(T) * size_t(j.cols) * sizeof(uint16_t));
        splits.job[k] = {j.x, j.ldx, j.cols, kU8 ? j.ry : nullptr, kU8 ? j.my : nullptr, nullptr, stride / sizeof(uint16_t), nullptr, nullptr, k};
        offset.push_back(bytes);
        bytes += kParts * stride + aligned(size_t(T) * sizeof(float)) + aligned(size_t(T) * 3 * sizeof(float));
      }
      input_of.push_back(k);
    }
    char* base = static_cast<char*>(scratch(c, bytes));  // sized before any pointer into it is taken
    for (int k = 0; k < splits.count; ++k) {
      SplitJob& s = splits.job[k];
      char* at = base + offset[size_t(k)];
      s.parts = reinterpret_cast<uint16_t*>(at);
      s.scales = reinterpret_cast<float*>(at + kParts * s.part_stride * sizeof(uint16_t));
      s.sums = reinterpret_cast<float*>(reinterpret_cast<char*>(s.scales) + aligned(size_t(T) * sizeof(float)));
    }
    MatvecJobs<Output> jobs;
    for (size_t i = first; i < last; ++i) {
      const LinearJob& j = *group[i];
      const SplitJob& s = splits.job[input_of[i - first]];
      Output output;
      if constexpr (kU8) output = U8Output{j.rx, j.mx, s.sums, j.out};
      else output = PlainOutput{j.out};
      jobs.job[jobs.count++] = {j.W, j.rows, j.cols, s.parts, s.part_stride, s.scales, j.y, j.ldy, output, {1, 0}, 0};
    }
    chain(split_rows_kernel<Fmt::kBf16>, dim3(unsigned(T), unsigned(splits.count)), kSplitThreads, "split activations", splits);
    matvec<Fmt>(jobs, T, vector);
  }
}

}  // namespace

void linears(const LinearJob* jobs, int count, int T) {
  if (T <= 0) return;
  // Up to kMatvecMaxRows rows of x: tensor-core products grouped by weight format and load width, each
  // group one launch pair. Beyond that, and fp32 always, cuBLAS.
  std::vector<const LinearJob*> f16[2], bf16[2], u8[2], gemm_f16, gemm_bf16;
  for (int i = 0; i < count; ++i) {
    const LinearJob& j = jobs[i];
    if (j.rows <= 0) continue;
    const bool blas = j.type == WeightType::F32 || T > kMatvecMaxRows;
    switch (j.type) {
      case WeightType::F32: blas_product(j, T); break;
      case WeightType::F16: (blas ? gemm_f16 : f16[vector_weights(j, F16Weights::kPerLoad)]).push_back(&j); break;
      case WeightType::BF16: (blas ? gemm_bf16 : bf16[vector_weights(j, BF16Weights::kPerLoad)]).push_back(&j); break;
      case WeightType::U8:
        if (blas) blas_product(j, T);
        else u8[vector_weights(j, U8Weights::kPerLoad)].push_back(&j);
        break;
    }
  }
  for (bool vector : {false, true}) {
    if (!f16[vector].empty()) matvecs<F16Weights>(f16[vector], T, vector);
    if (!bf16[vector].empty()) matvecs<BF16Weights>(bf16[vector], T, vector);
    if (!u8[vector].empty()) matvecs<U8Weights>(u8[vector], T, vector);
  }
  if (!gemm_f16.empty()) half_gemms<__half>(CUDA_R_16F, gemm_f16, T);
  if (!gemm_bf16.empty()) half_gemms<__nv_bfloat16>(CUDA_R_16BF, gemm_bf16, T);
}

void linear(const void* W, WeightType type, const float* rx, const float* mx, const float* ry, const float* my, int64_t rows, int64_t cols,
            const float* x, int64_t ldx, float* y, int64_t ldy, int T, ProductOutput out) {
  const LinearJob job{W, type, rx, mx, ry, my, rows, cols, x, ldx, y, ldy, out};
  linears(&job, 1, T);
}

void linear_f32(const float* W, int rows, int cols, const float* x, float* y, int T) {
  linear(W, WeightType::F32, nullptr, nullptr, nullptr, nullptr, rows, cols, x, cols, y, rows, T);
  synchronize();
}

}  // namespace skein::cuda
