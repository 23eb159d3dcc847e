#include "worker/backend_factory.h"

#include "common/error.h"
#include "worker/cpu_backend.h"
#ifdef SKEIN_HAVE_CUDA
#include "worker/cuda_backend.h"
#endif

namespace skein {

std::unique_ptr<Backend> make_backend(int cuda_device) {
  if (cuda_device < 0) return std::make_unique<CpuBackend>();
#ifdef SKEIN_HAVE_CUDA
  return std::make_unique<CudaBackend>(cuda_device);
#else
  fail("cuda:", cuda_device, " needs a build with CUDA (nvcc was not found when Skein was built)");
#endif
}

}  // namespace skein
