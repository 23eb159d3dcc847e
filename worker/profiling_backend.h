// A Backend that runs another one and times each of its ops on that device's clock (the host clock on
// the CPU, events on a GPU's stream): `skein bench --profile`. Each op is marked before and after; on a
// GPU that is busy the first mark is reached when the work before it ends, so an op's time includes
// the wait for its own launch. It never records steps: inside a CUDA graph a step's ops are one launch,
// so the profile is of direct launches (an upper bound on a replayed step).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "worker/backend.h"

namespace skein {

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(std::unique_ptr<Backend> inner);
  Backend& inner() { return *inner_; }

  struct OpTime {
    std::string op;  // e.g. "wkv7", "linear fp16 4096x4096"
    int64_t calls = 0;
    double seconds = 0;
    double weight_bytes = 0;  // matrix bytes the products read
  };
  // Totals since the last reset, longest first (waits for the ops enqueued so far).
  std::vector<OpTime> totals();
  void reset();

  std::string name() const override { return inner_->name(); }
  bool streams_from_host() const override { return inner_->streams_from_host(); }
  void hold_in_host(const LayerWeights& lw) override { inner_->hold_in_host(lw); }
  void prefetch(const LayerWeights& lw) override { inner_->prefetch(lw); }
  void bring_in(const LayerWeights& lw) override { inner_->bring_in(lw); }
  void let_go(const LayerWeights& lw) override { inner_->let_go(lw); }

  float* allocate(size_t n) override { return inner_->allocate(n); }
  void release(float* p) override { inner_->release(p); }
  void to_device(float* dst, const float* host, size_t n) override;
  void to_host(float* host, const float* src, size_t n) override;
  void copy(float* dst, const float* src, size_t n) override;
  void sample(float* logits, int n, int V, std::span<const SampleRequest> rows, int32_t* tokens) override;
  void gather_rows(const float* x, const int32_t* rows, int n, int C, float* out) override;

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

 private:
  // Runs one op between two marks; `settles` (after a download) also turns the marks into totals.
  template <typename Run>
  void timed(std::string op, double weight_bytes, Run&& run, bool settles = false);
  void settle();

  std::unique_ptr<Backend> inner_;
  struct Pending {
    std::string op;
    double weight_bytes;
    std::unique_ptr<WorkMark> from, to;
  };
  std::vector<Pending> pending_;
  std::vector<OpTime> totals_;
};

}  // namespace skein
