// cuBLAS, opened when a CUDA stage loads (cuda::prepare_products) or a GPU product first needs it.
// Linked, it cost every Skein process 216 MB of resident memory and 0.6 s at start-up (libcublasLt's
// static initialisers), GPU or not: the coordinator rank, CPU stages, `skein client`, every test.
// Only the calls Skein makes are looked up.
#pragma once
#include <cublas_v2.h>

namespace skein::cuda {

struct CublasLibrary {
  decltype(&cublasCreate_v2) create;
  decltype(&cublasSetStream_v2) set_stream;
  decltype(&cublasSetWorkspace_v2) set_workspace;
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*, const void*, cudaDataType, int,
                            const void*, cudaDataType, int, const void*, void*, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  decltype(&cublasSgemm_v2) sgemm;
};

// Opens libcublas.so.<major> of the toolkit Skein was built with (the loader's search path first, then
// the build's toolkit directory); throws skein::Error saying which library and why when it cannot.
const CublasLibrary& cublas();

}  // namespace skein::cuda
