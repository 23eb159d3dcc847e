// y = W·x over T rows on the CPU. Decode-sized products (few rows) stream the stored weights through a
// vectorised dot-product kernel, bandwidth-bound by design; larger products widen a block of rows to
// fp32 and hand it to oneDNN's sgemm.
#pragma once
#include <cstdint>
#include <string_view>

#include "common/matrix.h"

namespace skein::cpu {

// y[t*ldy + o] = sum_i W[o][i] * x[t*ldx + i] for t < T, o < W.rows.
void linear(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T);

// Dot-product kernel alone (any T); what linear() uses below gemm_min_rows(W) rows.
void linear_streaming(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T);

// Several independent products through the dot-product kernel in one parallel region, the threads
// sharing their weight bytes evenly: a decode step's small products (a layer's r, k, v and LoRA factors)
// would each pay a fork/join and leave a core idle on a short or single-threaded matrix. Each y is what
// its product alone gives, bit for bit (linear_streaming is this with one product).
struct StreamingProduct {
  const Matrix* W;
  const float* x;
  int64_t ldx;
  float* y;
  int64_t ldy;
};
void linears_streaming(const StreamingProduct* products, int count, int T);

// Whether linear() streams W for T rows (else it multiplies through sgemm).
bool streams(const Matrix& W, int T);

// From how many rows of x sgemm beats the streaming kernel. fp32 weights go to sgemm as they are; other
// dtypes must first be widened to fp32, which costs more than reading the weights once per step until
// the batch is large (0.1B v7 fp16 on 2 cores: decode batch 8 streams at 223 tokens/s vs 59 widened,
// batch 32 at 306 vs 169; a 64-token chunk widened runs at 363).
inline int gemm_min_rows(const Matrix& W) { return W.dtype == DType::F32 ? 5 : 64; }

// Batch invariance: every product goes through the streaming kernel, whose result for a row never
// depends on the other rows in the batch, so a request batched with others gets bit for bit the logits
// it gets alone. Costs about half of prefill speed (oneDNN's blocking depends on the batch size).
void set_batch_invariant(bool on);
bool batch_invariant();

// Compute threads for kernels and BLAS; defaults to the cores this process may use.
void set_compute_threads(int n);
int compute_threads();

// Which vector unit the streaming kernel uses: "avx512", "avx2" or "scalar" (the best this CPU has).
const char* simd_level();
// Use a lesser level than the CPU's best, so tests run every kernel on one machine; false (nothing
// changed) for an unknown level or one this CPU lacks.
bool set_simd_level(std::string_view level);

}  // namespace skein::cpu
