#include "bench/memory_bandwidth.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "kernels/cpu/linear.h"

namespace skein {

double measure_read_bandwidth_gb_s(size_t bytes, int repeats) {
  const size_t n = bytes / sizeof(float);
  float* buf = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
  const int nth = cpu::compute_threads();
  // First touch by the same threads that read it later.
#pragma omp parallel for num_threads(nth) schedule(static)
  for (size_t i = 0; i < n; ++i) buf[i] = float(i & 1023);
  double best = 0;
  volatile float sink = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    float total = 0;
    // The best access pattern we know: each thread reads four long streams (as the decode kernel
    // does) with software prefetch, into 64 independent lanes so the loop is limited by memory, not by
    // the latency of one addition chain. (Prefetching every line 1 KiB ahead, as the kernel does,
    // measured the same limit.)
#pragma omp parallel num_threads(nth) reduction(+ : total)
    {
      int tid = omp_get_thread_num(), nt = omp_get_num_threads();
      size_t blocks = n / 64, b0 = blocks * tid / nt, b1 = blocks * (tid + 1) / nt;
      size_t per = (b1 - b0) / 4;
      float acc[64] = {};
      for (size_t b = 0; b < per; ++b)
        for (size_t s = 0; s < 4; ++s) {
          const float* p = buf + (b0 + s * per + b) * 64;
          __builtin_prefetch(p + 2048);
          for (int j = 0; j < 64; ++j) acc[j] += p[j];
        }
      for (float a : acc) total += a;
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink = sink + total;
    best = std::max(best, double(n * sizeof(float)) / s / 1e9);
  }
  std::free(buf);
  return best;
}

}  // namespace skein
