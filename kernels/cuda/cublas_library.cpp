#include "kernels/cuda/cublas_library.h"

#include <dlfcn.h>

#include <string>

#include "common/error.h"

namespace skein::cuda {

namespace {

// The header's own declaration must take the pointer's type (unevaluated: nothing links to cuBLAS).
static_assert(sizeof(static_cast<decltype(CublasLibrary::gemm_ex)>(&cublasGemmEx)) > 0, "cublasGemmEx's signature changed");

const std::string kSoname = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);

template <typename F>
void find(void* lib, const char* name, F& f) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  if (!f) fail("cuBLAS: ", kSoname, " has no ", name, " (a toolkit older than the one Skein was built with, CUDA ", CUBLAS_VER_MAJOR, "?)");
}

CublasLibrary open_cublas() {
  void* lib = dlopen(kSoname.c_str(), RTLD_NOW | RTLD_LOCAL);
  std::string why = lib ? "" : dlerror();
  if (!lib) lib = dlopen((std::string(SKEIN_CUBLAS_DIR) + "/" + kSoname).c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) fail("cuBLAS: cannot open ", kSoname, " (", why, "; nor in ", SKEIN_CUBLAS_DIR, "): add the CUDA toolkit's lib directory to LD_LIBRARY_PATH");
  CublasLibrary c{};
  find(lib, "cublasCreate_v2", c.create);
  find(lib, "cublasSetStream_v2", c.set_stream);
  find(lib, "cublasSetWorkspace_v2", c.set_workspace);
  find(lib, "cublasGemmEx", c.gemm_ex);
  find(lib, "cublasSgemm_v2", c.sgemm);
  return c;  // the library stays open for the process's life
}

}  // namespace

const CublasLibrary& cublas() {
  static const CublasLibrary library = open_cublas();  // thread-safe; a failure is retried at the next call
  return library;
}

}  // namespace skein::cuda
