// The decode product kernel at several pipeline depths (bench/product_sweep.h). Timed with CUDA events
// over back-to-back chained launches, as a decode step runs them; results checked against fp64 on the
// host, and against the product depth bit for bit.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>

#include "bench/product_sweep.h"
#include "common/hash.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/matvec.cuh"

namespace skein {

namespace {

using cuda::check;
using Jobs = cuda::MatvecJobs<cuda::PlainOutput>;
using Launch = void (*)(Jobs&, int);
using Kernel = void (*)(Jobs, int);

// The depths the sweep runs: loads per lane and row in a round, rounds in a warp's ring.
struct Depth {
  int steps, stages;
  Launch fp16, uint8;
  Kernel fp16_kernel, uint8_kernel;  // for the occupancy query
};
template <int kSteps, int kStages>
constexpr Depth depth() {
  return {kSteps,
          kStages,
          &cuda::launch_matvec<cuda::F16Weights, true, cuda::PlainOutput, kSteps, kStages>,
          &cuda::launch_matvec<cuda::U8Weights, true, cuda::PlainOutput, kSteps, kStages>,
          &cuda::matvec_kernel<cuda::F16Weights, true, cuda::PlainOutput, kSteps, kStages>,
          &cuda::matvec_kernel<cuda::U8Weights, true, cuda::PlainOutput, kSteps, kStages>};
}
constexpr Depth kDepths[] = {depth<1, 4>(), depth<1, 8>(), depth<2, 2>(), depth<2, 3>(), depth<2, 4>(), depth<2, 6>(), depth<4, 2>(), depth<4, 3>()};
constexpr bool sweeps_product_depth() {
  for (const Depth& d : kDepths)
    if (d.steps == cuda::kMatvecSteps && d.stages == cuda::kMatvecStages) return true;
  return false;
}
static_assert(sweeps_product_depth(), "the sweep must run the products' own depth");

// The floor: the same bytes read with nothing else to do, 16 bytes a load, four loads in flight per
// thread, past L1. A word per block is written only on an impossible sum, so no load is dead code.
__global__ void read_kernel(const uint4* p, size_t n, unsigned* out) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned acc = 0;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride), d = __ldcs(p + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
  }
  for (; i < n; i += stride) {
    const uint4 a = __ldcs(p + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9e3779b9u) out[blockIdx.x] = acc;
}

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc (product sweep)"); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// Seconds per launch of `launch(copy)`, best of three rounds of `repeats` launches each, copies in turn.
template <typename F>
double seconds_per_launch(int copies, int repeats, F&& launch) {
  cuda::Event *from = cuda::new_event(true), *to = cuda::new_event(true);
  launch(0);  // warm-up
  double best = 1e30;
  for (int round = 0; round < 3; ++round) {
    cuda::record(from);
    for (int i = 0; i < repeats; ++i) launch(i % copies);
    cuda::record(to);
    best = std::min(best, cuda::elapsed_seconds(from, to) / repeats);
  }
  cuda::destroy(from);
  cuda::destroy(to);
  return best;
}

}  // namespace

std::vector<ProductShape> decode_product_shapes() {
  std::vector<ProductShape> shapes;
  for (const char* format : {"fp16", "uint8"})
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{4096, 4096}, {16384, 4096}, {4096, 16384}, {65536, 4096}})
      for (int T : {1, 8}) shapes.push_back({format, rows, cols, T});
  return shapes;
}

std::vector<ProductSweepRow> sweep_products(int device, const std::vector<ProductShape>& shapes, int repeats) {
  cuda::set_device(device);
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  std::vector<ProductSweepRow> out;
  std::unique_ptr<DeviceBuffer> weights;  // `copies` copies of w
  std::vector<uint8_t> w;
  std::string weights_format;
  int64_t weights_rows = 0, weights_cols = 0;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (const ProductShape& shape : shapes) {
    const bool u8 = shape.format == "uint8";
    if (!u8 && shape.format != "fp16") fail("product sweep: format '", shape.format, "' is not fp16 or uint8");
    if (shape.T < 1 || shape.T > cuda::kMatvecMaxRows || shape.rows < 1 || shape.cols < 1 || shape.cols % (u8 ? 16 : 8) != 0)
      fail("product sweep: shape ", shape.rows, "x", shape.cols, " T ", shape.T, " is not a decode product of whole 16-byte loads");
    const size_t n = size_t(shape.rows) * size_t(shape.cols), bytes = n * (u8 ? 1 : 2);
    // Copies that together are four times the L2 cache: each launch reads weights no recent one read.
    const int copies = int(std::max<size_t>(1, (4 * size_t(prop.l2CacheSize) + bytes - 1) / bytes));
    // Weights, made again only when the matrix changes (shapes list the rows of x innermost): uint8
    // codes, or fp16 of random sign and mantissa in [0.5, 1).
    if (!weights || weights_format != shape.format || weights_rows != shape.rows || weights_cols != shape.cols) {
      weights.reset();
      w.resize(bytes);
      for (size_t i = 0; i < bytes; i += 8) {
        const uint64_t r = splitmix_at(0x9e3779b97f4a7c15ull, i / 8);
        std::memcpy(&w[i], &r, std::min<size_t>(8, bytes - i));
      }
      if (!u8)
        for (size_t i = 0; i < n; ++i) {
          uint16_t h;
          std::memcpy(&h, &w[2 * i], 2);
          h = uint16_t((h & 0x83ffu) | 0x3800u);
          std::memcpy(&w[2 * i], &h, 2);
        }
      weights = std::make_unique<DeviceBuffer>(bytes * size_t(copies));
      for (int c = 0; c < copies; ++c) cuda::upload_bytes(static_cast<uint8_t*>(weights->p) + size_t(c) * bytes, w.data(), bytes);
      weights_format = shape.format, weights_rows = shape.rows, weights_cols = shape.cols;
    }
    DeviceBuffer& W = *weights;
    auto weight = [&](int64_t o, int64_t i) -> double {
      const size_t e = size_t(o) * size_t(shape.cols) + size_t(i);
      if (u8) return w[e];
      __half h;
      std::memcpy(&h, &w[2 * e], 2);
      return __half2float(h);
    };
    // x in [-1, 1]; uint8's in its fp16 parts, as the products' prepare launch hands it over (unscaled:
    // [-1, 1] is inside fp16's range).
    const size_t xn = size_t(shape.T) * size_t(shape.cols);
    std::vector<float> x(xn);
    std::vector<uint16_t> x_hi(xn), x_lo(xn);
    std::vector<double> exact_x(xn);
    for (size_t i = 0; i < xn; ++i) {
      const float v = uniform(rng);
      const mma::F16Parts parts = mma::split_f16(v);
      x[i] = v;
      x_hi[i] = parts.hi, x_lo[i] = parts.lo;
      exact_x[i] = u8 ? double(fp16_to_float(parts.hi)) + double(fp16_to_float(parts.lo)) : double(v);
    }
    DeviceBuffer X(xn * 4), X_lo(xn * 2), Y(size_t(shape.T) * size_t(shape.rows) * 4), sink(4096 * 4);
    if (u8) {
      cuda::upload_bytes(X.p, x_hi.data(), xn * 2);
      cuda::upload_bytes(X_lo.p, x_lo.data(), xn * 2);
    } else {
      cuda::upload(static_cast<float*>(X.p), x.data(), xn);
    }

    // The floor first.
    {
      int per_sm = 0;
      check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, read_kernel, 256, 0), "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
      const unsigned blocks = unsigned(std::min(4096, std::max(1, per_sm) * prop.multiProcessorCount));
      const double s = seconds_per_launch(copies, repeats, [&](int c) {
        read_kernel<<<blocks, 256, 0, cuda::stream()>>>(reinterpret_cast<const uint4*>(static_cast<uint8_t*>(W.p) + size_t(c) * bytes), bytes / 16,
                                                        static_cast<unsigned*>(sink.p));
        cuda::check_launch("read kernel");
      });
      ProductSweepRow row;
      row.shape = shape;
      row.kernel = "read";
      row.blocks_per_sm = per_sm;
      row.us = s * 1e6;
      row.gb_s = double(bytes) / s / 1e9;
      row.max_error = 0;
      out.push_back(row);
    }

    // Sampled rows' exact products, and the scale an error is measured against.
    std::vector<int64_t> sampled;
    for (int64_t o = 0; o < shape.rows; o += 97) sampled.push_back(o);
    sampled.push_back(shape.rows - 1);
    std::vector<double> exact(sampled.size() * size_t(shape.T)), scale(exact.size());
    for (size_t k = 0; k < sampled.size(); ++k)
      for (int t = 0; t < shape.T; ++t) {
        double sum = 0, mag = 0;
        const double* xr = &exact_x[size_t(t) * size_t(shape.cols)];
        for (int64_t i = 0; i < shape.cols; ++i) {
          const double p = weight(sampled[k], i) * xr[i];
          sum += p, mag += std::fabs(p);
        }
        exact[k * size_t(shape.T) + size_t(t)] = sum;
        scale[k * size_t(shape.T) + size_t(t)] = std::max(mag, 1e-30);
      }

    std::vector<float> y(size_t(shape.T) * size_t(shape.rows));
    std::vector<std::vector<float>> results;  // each depth's, in the order of out's rows from `first`
    const size_t first = out.size();
    int max_shared = 0;
    check(cudaDeviceGetAttribute(&max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "cudaDeviceGetAttribute");
    for (const Depth& d : kDepths) {
      // The ring plus the kernel's 4 KiB of partial sums must fit a block's shared memory.
      if (cuda::matvec_ring_bytes(d.steps, d.stages) + 4096 > size_t(max_shared)) continue;
      auto jobs_for = [&](int c) {
        Jobs jobs;
        jobs.job[jobs.count++] = {static_cast<uint8_t*>(W.p) + size_t(c) * bytes, shape.rows, shape.cols, X.p, u8 ? X_lo.p : nullptr,
                                  shape.cols, static_cast<float*>(Y.p), shape.rows, cuda::PlainOutput{ProductOutput{}}, {1, 0}, 0};
        return jobs;
      };
      const Launch launch = u8 ? d.uint8 : d.fp16;
      check(cudaMemsetAsync(Y.p, 0xff, y.size() * 4, cuda::stream()), "cudaMemsetAsync");  // NaNs: a row the kernel misses shows
      Jobs jobs = jobs_for(0);
      launch(jobs, shape.T);
      cuda::download(y.data(), static_cast<const float*>(Y.p), y.size());
      ProductSweepRow row;
      row.shape = shape;
      row.kernel = "steps " + std::to_string(d.steps) + ", stages " + std::to_string(d.stages);
      row.steps = d.steps, row.stages = d.stages;
      // After the launch, which opted the kernel in to its ring.
      check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&row.blocks_per_sm, u8 ? d.uint8_kernel : d.fp16_kernel, cuda::kMatvecWarps * 32,
                                                          cuda::matvec_ring_bytes(d.steps, d.stages)),
            "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
      row.product = d.steps == cuda::kMatvecSteps && d.stages == cuda::kMatvecStages;
      for (size_t k = 0; k < sampled.size(); ++k)
        for (int t = 0; t < shape.T; ++t) {
          const size_t e = k * size_t(shape.T) + size_t(t);
          const double got = y[size_t(t) * size_t(shape.rows) + size_t(sampled[k])];
          const double err = std::isfinite(got) ? std::fabs(got - exact[e]) / scale[e] : INFINITY;
          row.max_error = std::max(row.max_error, err);
        }
      const double s = seconds_per_launch(copies, repeats, [&](int c) {
        Jobs j = jobs_for(c);
        launch(j, shape.T);
      });
      row.us = s * 1e6;
      row.gb_s = double(bytes) / s / 1e9;
      out.push_back(row);
      results.push_back(y);
    }
    // Bit for bit against the product depth's results (absent where the device cannot run it).
    for (size_t i = first; i < out.size(); ++i)
      if (out[i].product)
        for (size_t k = first; k < out.size(); ++k)
          out[k].same_as_product = std::memcmp(results[k - first].data(), results[i - first].data(), y.size() * 4) == 0;
  }
  cuda::synchronize();
  return out;
}

}  // namespace skein
