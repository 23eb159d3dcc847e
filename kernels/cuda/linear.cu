// Matrix products. Decode-sized batches (up to 8 rows of x) of fp16, bf16 and uint8 weights go through
// one matrix-vector kernel that streams the weights once with fp32 activations, as the CPU backend
// computes (uint8 factored as the CPU does, math::u8_output). Larger batches use cuBLAS: fp32 by sgemm,
// fp16/bf16 by GemmEx on tensor cores (activations rounded to the weight type, fp32 accumulation),
// uint8 dequantized to fp16 row tiles with the official element formula, then GemmEx. Everything runs
// on the device's one stream.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/rwkv_math.h"

namespace skein::cuda {

namespace {

constexpr int kMatvecMaxRows = 8;           // rows of x up to which half and uint8 weights use matvec_kernel
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

template <typename E>
__global__ void round_rows_kernel(const float* x, int64_t ldx, E* out, int64_t cols, size_t n) {
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  size_t t = i / size_t(cols), c = i % size_t(cols);
  out[i] = narrow<E>(x[t * size_t(ldx) + c]);
}

__global__ void dequant_rows_kernel(const uint8_t* W, const float* rx, const float* mx, const float* ry, const float* my, int64_t r0,
                                    int64_t cols, size_t n, __half* out) {
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int64_t o = r0 + int64_t(i / size_t(cols)), c = int64_t(i % size_t(cols));
  out[i] = __float2half_rn(math::dequant_u8(W[size_t(o) * size_t(cols) + size_t(c)], rx[o], mx[o], ry[c], my[c]));
}

// uint8 decode products, factored as the CPU's streaming kernel is (math::u8_output). First, per row t
// of x: xr = x*ry and the three sums (in double, one block per row).
__global__ void u8_prepare_kernel(const float* x, int64_t ldx, const float* ry, const float* my, int64_t cols, float* xr, float* sums) {
  const int t = blockIdx.x;
  const float* xt = x + size_t(t) * size_t(ldx);
  double a = 0, b = 0, c = 0;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    float xi = xt[i], r = xi * ry[i];
    xr[size_t(t) * size_t(cols) + size_t(i)] = r;
    a += r;
    b += double(xi) * my[i];
    c += xi;
  }
  __shared__ double part[3][32];
  for (int off = 16; off > 0; off /= 2) {
    a += __shfl_down_sync(0xffffffffu, a, off);
    b += __shfl_down_sync(0xffffffffu, b, off);
    c += __shfl_down_sync(0xffffffffu, c, off);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) { part[0][warp] = a; part[1][warp] = b; part[2][warp] = c; }
  __syncthreads();
  if (threadIdx.x == 0) {
    double s[3] = {0, 0, 0};
    for (int w = 0; w < int(blockDim.x / 32); ++w)
      for (int k = 0; k < 3; ++k) s[k] += part[k][w];
    for (int k = 0; k < 3; ++k) sums[t * 3 + k] = float(s[k]);
  }
}

// Decode-sized products: a warp per output row (or a few, below). Each lane reads 16 weight bytes at a
// time (one 128-bit load, so the warp streams 512 contiguous bytes of a row), widens them and multiplies
// them by the fp32 activations (read through the cache: every row uses the same ones); the warp reduces.
// One kernel for every weight format; T (rows of x) is a template argument so the accumulators stay in
// registers. A format: the element type, elements per 16-byte load, and the widening to fp32.
struct U8Weights {
  using Elem = uint8_t;
  static constexpr int kPerLoad = 16;
  static __device__ float widen(uint8_t q) { return float(q); }
};
struct F16Weights {
  using Elem = __half;
  static constexpr int kPerLoad = 8;
  static __device__ float widen(__half h) { return __half2float(h); }
};
struct BF16Weights {
  using Elem = __nv_bfloat16;
  static constexpr int kPerLoad = 8;
  static __device__ float widen(__nv_bfloat16 h) { return __bfloat162float(h); }
};
// What a row's dot products become: the value itself (fp16/bf16), or the uint8 scheme's factored
// output; then stored, activated or added to y as the caller asked.
struct PlainOutput {
  ProductOutput out;
  __device__ void operator()(float* dst, int64_t o, int, float dot) const { *dst = out.apply(dot, out.kind == ProductOutput::Add ? *dst : 0.0f, o); }
};
struct U8Output {
  const float *rx, *mx, *sums;  // sums [T x 3] from u8_prepare_kernel
  ProductOutput out;
  __device__ void operator()(float* dst, int64_t o, int t, float dot) const {
    const float v = math::u8_output(dot, sums[3 * t], sums[3 * t + 1], sums[3 * t + 2], rx[o], mx[o]);
    *dst = out.apply(v, out.kind == ProductOutput::Add ? *dst : 0.0f, o);
  }
};

// A warp computes kRows output rows, so each activation value it loads serves kRows weights: with T
// rows of x the activations would otherwise be read T times per weight byte through L1, which caps
// bandwidth well before memory does. Each output's summation order depends on neither T nor kRows.
template <typename Fmt, bool kVector, int T, int kRows, typename Output>
__global__ void matvec_kernel(const typename Fmt::Elem* W, int64_t rows, int64_t cols, const float* x, int64_t ldx, float* y, int64_t ldy,
                              Output output) {
  using Elem = typename Fmt::Elem;
  constexpr int K = Fmt::kPerLoad;
  const int64_t o0 = (int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32) * kRows;
  const int lane = threadIdx.x % 32;
  if (o0 >= rows) return;
  const int n_rows = int(rows - o0 < kRows ? rows - o0 : kRows);
  float acc[kRows][T] = {};
  const Elem* row[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) row[r] = W + size_t(o0 + (r < n_rows ? r : 0)) * size_t(cols);  // spare rows repeat the first
  if (kVector) {
#pragma unroll 2  // several 16-byte loads in flight per lane
    for (int64_t c = int64_t(lane) * K; c < cols; c += 32 * K) {
      uint4 packed[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) packed[r] = __ldg(reinterpret_cast<const uint4*>(row[r] + c));
#pragma unroll
      for (int t = 0; t < T; ++t) {
        const float4* xv = reinterpret_cast<const float4*>(x + size_t(t) * size_t(ldx) + size_t(c));
        float4 x4[K / 4];
#pragma unroll
        for (int g = 0; g < K / 4; ++g) x4[g] = __ldg(xv + g);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const Elem* q = reinterpret_cast<const Elem*>(&packed[r]);
          float sum = 0.0f;
#pragma unroll
          for (int g = 0; g < K / 4; ++g)
            sum += Fmt::widen(q[4 * g]) * x4[g].x + Fmt::widen(q[4 * g + 1]) * x4[g].y + Fmt::widen(q[4 * g + 2]) * x4[g].z +
                   Fmt::widen(q[4 * g + 3]) * x4[g].w;
          acc[r][t] += sum;
        }
      }
    }
  } else {
    for (int64_t c = lane; c < cols; c += 32)
#pragma unroll
      for (int t = 0; t < T; ++t) {
        const float xt = x[size_t(t) * size_t(ldx) + size_t(c)];
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc[r][t] += Fmt::widen(row[r][c]) * xt;
      }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int t = 0; t < T; ++t) {
      float v = acc[r][t];
      for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
      if (lane == 0 && r < n_rows) output(y + size_t(t) * size_t(ldy) + size_t(o0 + r), o0 + r, t, v);
    }
}

template <typename Fmt, int T, typename Output>
void matvec_rows(const void* W, int64_t rows, int64_t cols, const float* x, int64_t ldx, float* y, int64_t ldy, Output output) {
  // One row per warp for a single x (enough warps to keep memory busy), more as x's rows grow.
  constexpr int kRows = T == 1 ? 1 : T == 2 ? 2 : 4;
  const int warps = 8;
  const int64_t per_block = int64_t(warps) * kRows;
  const int blocks = int((rows + per_block - 1) / per_block);
  const auto* w = static_cast<const typename Fmt::Elem*>(W);
  // 16-byte loads need every row start and every activation group on 16 bytes.
  const bool vector = cols % Fmt::kPerLoad == 0 && reinterpret_cast<uintptr_t>(W) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                      ldx % 4 == 0;
  if (vector)
    matvec_kernel<Fmt, true, T, kRows><<<blocks, warps * 32, 0, stream()>>>(w, rows, cols, x, ldx, y, ldy, output);
  else
    matvec_kernel<Fmt, false, T, kRows><<<blocks, warps * 32, 0, stream()>>>(w, rows, cols, x, ldx, y, ldy, output);
  check_launch("matvec");
}

template <typename Fmt, typename Output>
void matvec(const void* W, int64_t rows, int64_t cols, const float* x, int64_t ldx, float* y, int64_t ldy, int T, Output output) {
  static_assert(kMatvecMaxRows == 8);
  switch (T) {
    case 1: return matvec_rows<Fmt, 1>(W, rows, cols, x, ldx, y, ldy, output);
    case 2: return matvec_rows<Fmt, 2>(W, rows, cols, x, ldx, y, ldy, output);
    case 3: return matvec_rows<Fmt, 3>(W, rows, cols, x, ldx, y, ldy, output);
    case 4: return matvec_rows<Fmt, 4>(W, rows, cols, x, ldx, y, ldy, output);
    case 5: return matvec_rows<Fmt, 5>(W, rows, cols, x, ldx, y, ldy, output);
    case 6: return matvec_rows<Fmt, 6>(W, rows, cols, x, ldx, y, ldy, output);
    case 7: return matvec_rows<Fmt, 7>(W, rows, cols, x, ldx, y, ldy, output);
    default: return matvec_rows<Fmt, 8>(W, rows, cols, x, ldx, y, ldy, output);
  }
}

// beta 1 adds the products to y (ProductOutput::Add), 0 stores them.
void gemm_half(cudaDataType type, const void* W, int64_t rows, int64_t cols, const void* x16, float* y, int64_t ldy, int T, float beta) {
  const float one = 1.0f;
  // Column-major view: y^T [rows x T] = W^T' [rows x cols] * x^T [cols x T].
  check_blas(cublasGemmEx(context().blas, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), T, int(cols), &one, W, type, int(cols), x16, type, int(cols),
                          &beta, y, CUDA_R_32F, int(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "GemmEx");
}

template <typename E>
const void* round_activations(DeviceContext& c, const float* x, int64_t ldx, int64_t cols, int T, size_t offset_bytes) {
  size_t n = size_t(T) * size_t(cols);
  auto* out = reinterpret_cast<E*>(static_cast<char*>(scratch(c, offset_bytes + n * sizeof(E))) + offset_bytes);
  round_rows_kernel<E><<<int((n + 255) / 256), 256, 0, stream()>>>(x, ldx, out, cols, n);
  check_launch("round activations");
  return out;
}

}  // namespace

void linear(const void* W, WeightType type, const float* rx, const float* mx, const float* ry, const float* my, int64_t rows, int64_t cols,
            const float* x, int64_t ldx, float* y, int64_t ldy, int T, ProductOutput out) {
  if (T <= 0 || rows <= 0) return;
  DeviceContext& c = context();
  const float one = 1.0f, beta = out.kind == ProductOutput::Add ? 1.0f : 0.0f;
  // cuBLAS stores or adds; an activation (and its bias) is a pass over the results afterwards.
  auto finish = [&] {
    if (out.kind == ProductOutput::Activate) activate_rows(out.op, y, T, rows, ldy, out.bias);
  };
  switch (type) {
    case WeightType::F32:
      check_blas(cublasSgemm(c.blas, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), T, int(cols), &one, static_cast<const float*>(W), int(cols), x,
                             int(ldx), &beta, y, int(ldy)),
                 "sgemm");
      return finish();
    case WeightType::F16:
      if (T <= kMatvecMaxRows) return matvec<F16Weights>(W, rows, cols, x, ldx, y, ldy, T, PlainOutput{out});
      gemm_half(CUDA_R_16F, W, rows, cols, round_activations<__half>(c, x, ldx, cols, T, 0), y, ldy, T, beta);
      return finish();
    case WeightType::BF16:
      if (T <= kMatvecMaxRows) return matvec<BF16Weights>(W, rows, cols, x, ldx, y, ldy, T, PlainOutput{out});
      gemm_half(CUDA_R_16BF, W, rows, cols, round_activations<__nv_bfloat16>(c, x, ldx, cols, T, 0), y, ldy, T, beta);
      return finish();
    case WeightType::U8: {
      const auto* q = static_cast<const uint8_t*>(W);
      if (T <= kMatvecMaxRows) {
        // xr [T x cols] then the sums [T x 3] in the scratch.
        size_t xr_bytes = (size_t(T) * size_t(cols) * sizeof(float) + 255) / 256 * 256;
        char* base = static_cast<char*>(scratch(c, xr_bytes + size_t(T) * 3 * sizeof(float)));
        auto* xr = reinterpret_cast<float*>(base);
        auto* sums = reinterpret_cast<float*>(base + xr_bytes);
        u8_prepare_kernel<<<T, 256, 0, stream()>>>(x, ldx, ry, my, cols, xr, sums);
        check_launch("u8 prepare");
        return matvec<U8Weights>(q, rows, cols, xr, cols, y, ldy, T, U8Output{rx, mx, sums, out});
      }
      // x rounded once at the start of the scratch, the dequantized tile after it (sized first, so the
      // scratch does not move under x).
      size_t x_bytes = (size_t(T) * size_t(cols) * sizeof(__half) + 255) / 256 * 256;
      int64_t tile_rows = std::min(kDequantTileRows, rows);
      char* base = static_cast<char*>(scratch(c, x_bytes + size_t(tile_rows) * size_t(cols) * sizeof(__half)));
      const void* x16 = round_activations<__half>(c, x, ldx, cols, T, 0);
      auto* tile = reinterpret_cast<__half*>(base + x_bytes);
      for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
        int64_t n_rows = std::min(tile_rows, rows - r0);
        size_t n = size_t(n_rows) * size_t(cols);
        dequant_rows_kernel<<<int((n + 255) / 256), 256, 0, stream()>>>(q, rx, mx, ry, my, r0, cols, n, tile);
        check_launch("dequant rows");
        gemm_half(CUDA_R_16F, tile, n_rows, cols, x16, y + r0, ldy, T, beta);
      }
      return finish();
    }
  }
}

void linear_f32(const float* W, int rows, int cols, const float* x, float* y, int T) {
  linear(W, WeightType::F32, nullptr, nullptr, nullptr, nullptr, rows, cols, x, cols, y, rows, T);
  synchronize();
}

}  // namespace skein::cuda
