// The backend a stage runs on: the CPU, or a GPU ("cuda:K") when this build has CUDA and the machine
// has that device. Failures say which of the two is missing.
#pragma once
#include <memory>

#include "worker/backend.h"

namespace skein {

// cuda_device < 0: the CPU backend.
std::unique_ptr<Backend> make_backend(int cuda_device);
// Backends made from now on time their ops (a ProfilingBackend around each): `skein bench --profile`.
void set_backend_profiling(bool on);

}  // namespace skein
