// The backend a stage runs on: the CPU, or a GPU ("cuda:K") when this build has CUDA and the machine
// has that device. Failures say which of the two is missing.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "worker/backend.h"

namespace skein {

// cuda_device < 0: the CPU backend.
std::unique_ptr<Backend> make_backend(int cuda_device);
// A GPU of this machine as a stage about to load onto it sees it: its name, and the bytes free now.
// None without CUDA in this build or without that device (making its backend then says which).
struct GpuMemory {
  std::string name;
  uint64_t free_bytes = 0, total_bytes = 0;
};
std::optional<GpuMemory> gpu_memory(int cuda_device);
// Backends made from now on time their ops (a ProfilingBackend around each): `skein bench --profile`.
void set_backend_profiling(bool on);

}  // namespace skein
