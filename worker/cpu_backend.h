// The CPU implementation of Backend: host memory, math from kernels/rwkv_math.h, products from
// kernels/cpu/linear.h (streaming kernel or BLAS).
#pragma once
#include "worker/backend.h"

namespace skein {

class CpuBackend : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  float* allocate(size_t n) override;
  void release(float* p) override;
  void to_device(float* dst, const float* host, size_t n) override;
  void to_host(float* host, const float* src, size_t n) override;
  void copy(float* dst, const float* src, size_t n) override;
  void gather_rows(const float* x, const int32_t* rows, int n, int C, float* out) override;
  void sample(float* logits, int n, int V, std::span<const SampleRequest> rows, int32_t* tokens) override;

  void embed(const ModelWeights& w, const int32_t* tokens, int T, float* x) override;
  void layer_norm(const float* x, const Vector& w, const Vector& b, float* y, int T, int C) override;
  void group_norm(float* x, const Vector& w, const Vector& b, int T, int H, int N) override;
  void linear(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T, ProductOutput out = {}) override;
  void linears(std::span<const Product> products, int T) override;
  void add(float* x, const float* y, size_t n) override;
  void mul(float* x, const float* y, size_t n) override;
  void token_shift(const float* xx, float* sx, std::span<const SeqSlice> seqs, int C) override;
  void norm_shift_mix(const float* x, const Vector& ln_w, const Vector& ln_b, std::span<const SeqSlice> seqs, std::span<const DeltaMix> mixes,
                      int T, int C) override;
  void lerp_mix(const float* xx, const float* sx, const Vector& m, float* out, int T, int C) override;
  void delta_mix(const float* xx, const float* sx, std::span<const DeltaMix> mixes, int64_t ld_tok, int T, int C) override;
  void wkv4(std::span<const SeqSlice> seqs, int C, const Vector& w, const Vector& u, const float* k, const float* v, float* y) override;
  void wkv5(std::span<const SeqSlice> seqs, int H, int N, const float* r, const float* k, const float* v, const float* w_tok,
            const Vector* w_fixed, const Vector& u, float* y) override;
  void v7_attention(std::span<const SeqSlice> seqs, int H, int N, const V7Attention& in, float* y, int T) override;
};

}  // namespace skein
