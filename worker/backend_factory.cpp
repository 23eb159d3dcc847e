#include "worker/backend_factory.h"

#include "common/error.h"
#include "worker/cpu_backend.h"
#include "worker/profiling_backend.h"
#ifdef SKEIN_HAVE_CUDA
#include "worker/cuda_backend.h"
#endif

namespace skein {

namespace {
bool g_profiling = false;

std::unique_ptr<Backend> device_backend(int cuda_device) {
  if (cuda_device < 0) return std::make_unique<CpuBackend>();
#ifdef SKEIN_HAVE_CUDA
  return std::make_unique<CudaBackend>(cuda_device);
#else
  fail("cuda:", cuda_device, " needs a build with CUDA (nvcc was not found when Skein was built)");
#endif
}
}  // namespace

std::unique_ptr<Backend> make_backend(int cuda_device) {
  auto b = device_backend(cuda_device);
  if (g_profiling) return std::make_unique<ProfilingBackend>(std::move(b));
  return b;
}

std::optional<GpuMemory> gpu_memory(int cuda_device) {
#ifdef SKEIN_HAVE_CUDA
  if (cuda_device < 0 || cuda_device >= cuda::device_count()) return std::nullopt;
  const cuda::DeviceInfo info = cuda::device_info(cuda_device);
  return GpuMemory{"cuda:" + std::to_string(cuda_device) + " (" + info.name + ")", uint64_t(info.free_bytes), uint64_t(info.total_bytes)};
#else
  (void)cuda_device;
  return std::nullopt;
#endif
}

void set_backend_profiling(bool on) { g_profiling = on; }

}  // namespace skein
