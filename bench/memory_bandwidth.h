// Measures the read bandwidth this process can reach with its compute threads: the limit a
// bandwidth-bound decode step is compared against.
#pragma once
#include <cstddef>

namespace skein {

// Best of `repeats` passes over a buffer of `bytes` (large enough to defeat the caches). GB/s (1e9).
double measure_read_bandwidth_gb_s(size_t bytes = size_t(1) << 30, int repeats = 5);

}  // namespace skein
