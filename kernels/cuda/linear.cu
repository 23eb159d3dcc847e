// Matrix products. fp16, bf16 and uint8 weights go through one tensor-core kernel (matvec.cuh) with
// activations kept to fp32 accuracy, as the CPU backend computes (uint8 factored as the CPU does,
// math::u8_output), up to 8 rows of x (decode). Beyond that cuBLAS: fp32 by sgemm, fp16/bf16 by
// GemmEx on tensor cores (activations rounded to the weight type, fp32 accumulation), uint8
// dequantized to fp16 row tiles with the official element formula, then GemmEx. A set of independent
// products (linears) shares launches: one tensor-core launch per weight format, or one rounding launch
// for all the inputs of its GEMMs, which then run side by side on streams forked from the device's
// stream and joined back to it. Everything else runs on the device's stream.
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
#include "kernels/cuda/cublas_library.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/job_table.cuh"
#include "kernels/cuda/matvec.cuh"
#include "kernels/cuda/product_memory.h"
#include "kernels/mma_tile.h"
#include "kernels/rwkv_math.h"

namespace skein::cuda {

namespace {

// A set's GEMMs run side by side on kGemmLanes streams (lane 0 is the device's stream), each with its
// own cuBLAS handle and workspace: beyond 8 rows a v7 layer's r, k and v, and above all its LoRA
// factors (64 to 480 rows of W: a few tiles each, most of the GPU idle), would otherwise run one
// after another.
struct DeviceContext {
  cublasHandle_t blas[kGemmLanes] = {};
  cudaStream_t lane[kGemmLanes] = {};
  cudaEvent_t fork = nullptr, join[kGemmLanes] = {};
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
};

DeviceContext& context() {
  static std::mutex mu;
  static std::map<int, DeviceContext> contexts;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(mu);
  DeviceContext& c = contexts[dev];
  if (!c.blas[0]) {
    c.lane[0] = stream();
    for (int l = 1; l < kGemmLanes; ++l) check(cudaStreamCreateWithFlags(&c.lane[l], cudaStreamNonBlocking), "cudaStreamCreate (GEMM lane)");
    check(cudaEventCreateWithFlags(&c.fork, cudaEventDisableTiming), "cudaEventCreate");
    for (auto& e : c.join) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
    for (int l = 0; l < kGemmLanes; ++l) {
      check_blas(cublas().create(&c.blas[l]), "cublasCreate");
      check_blas(cublas().set_stream(c.blas[l], c.lane[l]), "cublasSetStream");
      // A workspace of each handle's own, so products recorded into a CUDA graph never allocate and
      // lanes running at once never share one.
      void* workspace = nullptr;
      check(cudaMalloc(&workspace, kBlasWorkspaceBytes), "cudaMalloc (cuBLAS workspace)");
      check_blas(cublas().set_workspace(c.blas[l], workspace, kBlasWorkspaceBytes), "cublasSetWorkspace");
    }
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

// uint8 decode products, factored as the CPU's streaming kernel is (math::u8_output). First, per row t
// of each product's x (one block per row and product): the three sums (in double) and xr = x*ry,
// scaled by the power of two that brings the row's largest |xr| into fp16's range and split into the
// fp16 parts the tensor cores take (mma::f16_scale_exponent, mma::split_f16), with the scale's inverse
// as a fourth sum.
struct U8Prepare {
  const float* x;
  int64_t ldx;
  const float *ry, *my;
  int64_t cols;
  uint16_t *xr_hi, *xr_lo;  // xr's fp16 parts [T x cols] each
  float* sums;              // [T x 4]
  int first_block;          // blockIdx.y of this product (its index)
};
struct U8Prepares {
  U8Prepare job[kMaxGroup];
  int count = 0;
};
constexpr int kPrepareThreads = 1024, kPrepareLoads = 4;  // a 16384-wide row: 4 rounds of 4 loads per thread
__global__ void __launch_bounds__(kPrepareThreads) u8_prepare_kernel(U8Prepares jobs) {
  // Released before the wait: the product kernel this one prepares for is then scheduled, and
  // prefetches its weights, while the kernel before this one still runs (released after it, as
  // chained_start does, the product kernel's launch waited for that kernel to end: five times a layer
  // at decode, where fp16 products chain straight into each other).
  release_next_kernel();
  wait_for_previous_kernel();
  const U8Prepare j = pick(jobs.job, jobs.count, int(blockIdx.y));
  const int t = blockIdx.x;
  const float* xt = j.x + size_t(t) * size_t(j.ldx);
  uint16_t* hi = j.xr_hi + size_t(t) * size_t(j.cols);
  uint16_t* lo = j.xr_lo + size_t(t) * size_t(j.cols);
  // The sums and the largest |xr|, then the split with the row's scale: each round loads before it
  // stores (xr's parts may alias the inputs as far as the compiler knows, and a load after a store
  // waits for memory), so a row is a few rounds of loads, not a load per element.
  double a = 0, b = 0, c = 0;
  float peak = 0.0f;
  for (int64_t base = threadIdx.x; base < j.cols; base += int64_t(kPrepareLoads) * blockDim.x)
#pragma unroll
    for (int u = 0; u < kPrepareLoads; ++u) {
      const int64_t i = base + int64_t(u) * blockDim.x;
      const float xi = i < j.cols ? xt[i] : 0.0f, r = xi * (i < j.cols ? j.ry[i] : 0.0f);
      a += r;
      b += double(xi) * (i < j.cols ? j.my[i] : 0.0f);
      c += xi;
      peak = fmaxf(peak, fabsf(r));
    }
  __shared__ double part[3][32];
  __shared__ float peaks[32];
  __shared__ float scale;
  for (int off = 16; off > 0; off /= 2) {
    a += __shfl_down_sync(0xffffffffu, a, off);
    b += __shfl_down_sync(0xffffffffu, b, off);
    c += __shfl_down_sync(0xffffffffu, c, off);
    peak = fmaxf(peak, __shfl_down_sync(0xffffffffu, peak, off));
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) { part[0][warp] = a; part[1][warp] = b; part[2][warp] = c; peaks[warp] = peak; }
  __syncthreads();
  if (threadIdx.x == 0) {
    double s[3] = {0, 0, 0};
    float m = 0.0f;
    for (int w = 0; w < int(blockDim.x / 32); ++w) {
      for (int k = 0; k < 3; ++k) s[k] += part[k][w];
      m = fmaxf(m, peaks[w]);
    }
    const int k = mma::f16_scale_exponent(m);
    for (int q = 0; q < 3; ++q) j.sums[t * 4 + q] = float(s[q]);
    j.sums[t * 4 + 3] = mma::pow2(-k);
    scale = mma::pow2(k);
  }
  __syncthreads();
  const float s = scale;
  for (int64_t base = threadIdx.x; base < j.cols; base += int64_t(kPrepareLoads) * blockDim.x) {
    float r[kPrepareLoads];
#pragma unroll
    for (int u = 0; u < kPrepareLoads; ++u) {
      const int64_t i = base + int64_t(u) * blockDim.x;
      r[u] = i < j.cols ? xt[i] * j.ry[i] : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kPrepareLoads; ++u) {
      const int64_t i = base + int64_t(u) * blockDim.x;
      if (i < j.cols) {
        const mma::F16Parts parts = mma::split_f16(r[u] * s);
        hi[i] = parts.hi;
        lo[i] = parts.lo;
      }
    }
  }
}
// beta 1 adds the products to y (ProductOutput::Add), 0 stores them.
void gemm_half(cublasHandle_t blas, cudaDataType type, const void* W, int64_t rows, int64_t cols, const void* x16, float* y, int64_t ldy, int T,
               float beta) {
  const float one = 1.0f;
  // Column-major view: y^T [rows x T] = W^T' [rows x cols] * x^T [cols x T].
  check_blas(cublas().gemm_ex(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), T, int(cols), &one, W, type, int(cols), x16, type, int(cols),
                             &beta, y, CUDA_R_32F, int(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "GemmEx");
}

// cuBLAS stores or adds; an activation (and its bias) is a pass over the results afterwards, every
// activated product of a set in one launch (each product's blocks after the previous one's).
struct ActivateJob {
  float* y;
  int64_t n, ldy;
  const float* bias;  // [n] or null
  UnaryOp op;
  int first_block;
};
struct ActivateJobs {
  ActivateJob job[kMaxGroup];
  int count = 0;
  void add(const LinearJob& j) {
    if (j.out.kind == ProductOutput::Activate) job[count++] = {j.y, j.rows, j.ldy, j.out.bias, j.out.op, 0};
  }
};
__global__ void activate_kernel(ActivateJobs jobs, int T) {
  chained_start();
  const ActivateJob j = pick(jobs.job, jobs.count, int(blockIdx.x));
  const size_t i = size_t(int(blockIdx.x) - j.first_block) * blockDim.x + threadIdx.x;
  if (i >= size_t(T) * size_t(j.n)) return;
  const size_t c = i % size_t(j.n);
  float& v = j.y[(i / size_t(j.n)) * size_t(j.ldy) + c];
  v = math::activate(j.op, j.bias ? v + j.bias[c] : v);
}
void activate_after_blas(ActivateJobs& jobs, int T) {
  const int64_t blocks = lay_out_blocks(jobs, [T](const ActivateJob& j) { return (int64_t(T) * j.n + 255) / 256; });
  if (blocks > 0) chain(activate_kernel, unsigned(blocks), 256, "activate", jobs, T);
}

template <typename E>
void round_rows(RoundJobs& jobs, int T) {
  const int64_t blocks = lay_out_blocks(jobs, [T](const RoundJob& j) { return (int64_t(T) * j.cols + 255) / 256; });
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

// Lanes 1..lanes-1 start after the work enqueued so far on the device's stream, which waits for them
// at the join (a CUDA graph capture follows the same edges).
void fork_lanes(DeviceContext& c, int lanes) {
  if (lanes < 2) return;
  check(cudaEventRecord(c.fork, c.lane[0]), "cudaEventRecord (fork)");
  for (int l = 1; l < lanes; ++l) check(cudaStreamWaitEvent(c.lane[l], c.fork, 0), "cudaStreamWaitEvent (fork)");
}
void join_lanes(DeviceContext& c, int lanes) {
  for (int l = 1; l < lanes; ++l) {
    check(cudaEventRecord(c.join[l], c.lane[l]), "cudaEventRecord (join)");
    check(cudaStreamWaitEvent(c.lane[0], c.join[l], 0), "cudaStreamWaitEvent (join)");
  }
}

// fp16/bf16 products beyond kMatvecMaxRows rows: every distinct input of up to kMaxGroup products
// rounded in one launch (a LoRA often reads a large product's input), then a GemmEx each, side by
// side on the lanes.
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
    // Each GEMM to the lane with the least work so far (largest first), the lanes forked from the
    // device's stream after the rounding and joined back before the activations.
    std::vector<size_t> order;
    for (size_t i = first; i < last; ++i) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return group[a]->rows * group[a]->cols > group[b]->rows * group[b]->cols; });
    const int lanes = int(std::min<size_t>(kGemmLanes, order.size()));
    fork_lanes(c, lanes);
    double work[kGemmLanes] = {};
    for (size_t i : order) {
      const LinearJob& j = *group[i];
      const int l = int(std::min_element(work, work + lanes) - work);
      work[l] += double(j.rows) * double(j.cols);
      gemm_half(c.blas[l], type, j.W, j.rows, j.cols, inputs.job[input_of[i - first]].out, j.y, j.ldy, T,
                j.out.kind == ProductOutput::Add ? 1.0f : 0.0f);
    }
    join_lanes(c, lanes);
    ActivateJobs activations;
    for (size_t i = first; i < last; ++i) activations.add(*group[i]);
    activate_after_blas(activations, T);
  }
}

// 16-byte loads need every weight row and every activation row to start on 16 bytes.
bool vector_weights(const LinearJob& j, int elems_per_load) {
  return j.cols % elems_per_load == 0 && reinterpret_cast<uintptr_t>(j.W) % 16 == 0;
}
bool vector_loads(const LinearJob& j, int elems_per_load) {
  return vector_weights(j, elems_per_load) && reinterpret_cast<uintptr_t>(j.x) % 16 == 0 && j.ldx % 4 == 0;
}

// An fp32 product (any T) or a uint8 one beyond kMatvecMaxRows rows, through cuBLAS.
void blas_product(const LinearJob& j, int T) {
  DeviceContext& c = context();
  const float one = 1.0f, beta = j.out.kind == ProductOutput::Add ? 1.0f : 0.0f;
  switch (j.type) {
    case WeightType::F32:
      check_blas(cublas().sgemm(c.blas[0], CUBLAS_OP_T, CUBLAS_OP_N, int(j.rows), T, int(j.cols), &one, static_cast<const float*>(j.W), int(j.cols), j.x,
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
        gemm_half(c.blas[0], CUDA_R_16F, tile, n_rows, j.cols, x16, j.y + r0, j.ldy, T, beta);
      }
      break;
    }
  }
  ActivateJobs activation;
  activation.add(j);
  activate_after_blas(activation, T);
}

template <typename Output>
MatvecJob<Output> matvec_job(const LinearJob& j, const void* x, const void* x_lo, int64_t ldx, Output output) {
  return {j.W, j.rows, j.cols, x, x_lo, ldx, j.y, j.ldy, output, {1, 0}, 0};
}

// Products of one half-precision format, up to kMaxGroup per launch.
template <typename Fmt>
void half_matvecs(const std::vector<const LinearJob*>& group, int T, bool vector) {
  for (size_t first = 0; first < group.size(); first += kMaxGroup) {
    MatvecJobs<PlainOutput> jobs;
    for (size_t i = first; i < std::min(group.size(), first + kMaxGroup); ++i)
      jobs.job[jobs.count++] = matvec_job(*group[i], group[i]->x, nullptr, group[i]->ldx, PlainOutput{group[i]->out});
    matvec<Fmt>(jobs, T, vector);
  }
}

// uint8 products, up to kMaxGroup per launch pair: one launch prepares every product's xr (scaled, in
// fp16 parts) and sums (in the scratch), one streams the weights.
void u8_matvecs(const std::vector<const LinearJob*>& group, int T, bool vector) {
  DeviceContext& c = context();
  for (size_t first = 0; first < group.size(); first += kMaxGroup) {
    const size_t last = std::min(group.size(), first + kMaxGroup);
    std::vector<size_t> offset;  // each product's xr high parts, low parts, then its sums, in one scratch block
    size_t bytes = 0;
    for (size_t i = first; i < last; ++i) {
      offset.push_back(bytes);
      bytes += 2 * aligned(size_t(T) * size_t(group[i]->cols) * sizeof(uint16_t)) + aligned(size_t(T) * 4 * sizeof(float));
    }
    char* base = static_cast<char*>(scratch(c, bytes));
    U8Prepares prep;
    MatvecJobs<U8Output> jobs;
    for (size_t i = first; i < last; ++i) {
      const LinearJob& j = *group[i];
      const size_t part = aligned(size_t(T) * size_t(j.cols) * sizeof(uint16_t));
      auto* hi = reinterpret_cast<uint16_t*>(base + offset[i - first]);
      auto* lo = reinterpret_cast<uint16_t*>(base + offset[i - first] + part);
      auto* sums = reinterpret_cast<float*>(base + offset[i - first] + 2 * part);
      prep.job[prep.count] = {j.x, j.ldx, j.ry, j.my, j.cols, hi, lo, sums, prep.count};
      ++prep.count;
      jobs.job[jobs.count++] = matvec_job(j, hi, lo, j.cols, U8Output{j.rx, j.mx, sums, j.out});
    }
    chain(u8_prepare_kernel, dim3(unsigned(T), unsigned(prep.count)), kPrepareThreads, "u8 prepare", prep);
    matvec<U8Weights>(jobs, T, vector);
  }
}

}  // namespace

void linears(const LinearJob* jobs, int count, int T) {
  if (T <= 0) return;
  // Tensor-core products grouped by weight format and load width, each group one launch (or two);
  // fp32, and everything beyond 8 rows of x, through cuBLAS.
  std::vector<const LinearJob*> f16[2], bf16[2], u8[2], gemm_f16, gemm_bf16;
  for (int i = 0; i < count; ++i) {
    const LinearJob& j = jobs[i];
    if (j.rows <= 0) continue;
    const bool blas = T > kMatvecMaxRows;
    switch (j.type) {
      case WeightType::F32: blas_product(j, T); break;
      case WeightType::F16: (blas ? gemm_f16 : f16[vector_loads(j, F16Weights::kPerLoad)]).push_back(&j); break;
      case WeightType::BF16: (blas ? gemm_bf16 : bf16[vector_loads(j, BF16Weights::kPerLoad)]).push_back(&j); break;
      case WeightType::U8:
        if (blas) blas_product(j, T);
        else u8[vector_weights(j, U8Weights::kPerLoad)].push_back(&j);  // x becomes xr: aligned, rows cols apart
        break;
    }
  }
  for (bool vector : {false, true}) {
    if (!f16[vector].empty()) half_matvecs<F16Weights>(f16[vector], T, vector);
    if (!bf16[vector].empty()) half_matvecs<BF16Weights>(bf16[vector], T, vector);
    if (!u8[vector].empty()) u8_matvecs(u8[vector], T, vector);
  }
  if (!gemm_f16.empty()) half_gemms<__half>(CUDA_R_16F, gemm_f16, T);
  if (!gemm_bf16.empty()) half_gemms<__nv_bfloat16>(CUDA_R_16BF, gemm_bf16, T);
}

void linear(const void* W, WeightType type, const float* rx, const float* mx, const float* ry, const float* my, int64_t rows, int64_t cols,
            const float* x, int64_t ldx, float* y, int64_t ldy, int T, ProductOutput out) {
  const LinearJob job{W, type, rx, mx, ry, my, rows, cols, x, ldx, y, ldy, out};
  linears(&job, 1, T);
}

void prepare_products() { context(); }

void linear_f32(const float* W, int rows, int cols, const float* x, float* y, int T) {
  linear(W, WeightType::F32, nullptr, nullptr, nullptr, nullptr, rows, cols, x, cols, y, rows, T);
  synchronize();
}

}  // namespace skein::cuda
