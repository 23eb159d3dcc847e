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
#pragma omp parallel for num_threads(nth) schedule(static) reduction(+ : total)
    for (size_t i = 0; i < n; ++i) total += buf[i];
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink = sink + total;
    best = std::max(best, double(n * sizeof(float)) / s / 1e9);
  }
  std::free(buf);
  return best;
}

}  // namespace skein
