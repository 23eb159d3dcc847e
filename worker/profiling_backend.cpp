#include "worker/profiling_backend.h"

#include <algorithm>

#include "common/dtype.h"

namespace skein {

ProfilingBackend::ProfilingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

template <typename Run>
void ProfilingBackend::timed(std::string op, double weight_bytes, Run&& run, bool settles) {
  auto from = inner_->mark();
  run();
  pending_.push_back({std::move(op), weight_bytes, std::move(from), inner_->mark()});
  if (settles) settle();  // the device is idle: reading its marks waits for nothing
}

void ProfilingBackend::settle() {
  for (Pending& p : pending_) {
    auto it = std::find_if(totals_.begin(), totals_.end(), [&](const OpTime& t) { return t.op == p.op; });
    if (it == totals_.end()) it = totals_.insert(totals_.end(), OpTime{p.op});
    it->calls += 1;
    it->seconds += inner_->seconds_between(*p.from, *p.to);
    it->weight_bytes += p.weight_bytes;
  }
  pending_.clear();
}

std::vector<ProfilingBackend::OpTime> ProfilingBackend::totals() {
  settle();
  std::vector<OpTime> out = totals_;
  std::stable_sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.seconds > b.seconds; });
  return out;
}

void ProfilingBackend::reset() {
  pending_.clear();  // unread marks are dropped: nothing waits for them
  totals_.clear();
}

void ProfilingBackend::to_device(float* dst, const float* host, size_t n) {
  timed("upload", 0, [&] { inner_->to_device(dst, host, n); });
}
void ProfilingBackend::to_host(float* host, const float* src, size_t n) {
  timed("download", 0, [&] { inner_->to_host(host, src, n); }, true);
}
void ProfilingBackend::copy(float* dst, const float* src, size_t n) {
  timed("copy", 0, [&] { inner_->copy(dst, src, n); });
}
void ProfilingBackend::sample(float* logits, int n, int V, std::span<const SampleRequest> rows, int32_t* tokens) {
  timed("sample", 0, [&] { inner_->sample(logits, n, V, rows, tokens); }, true);
}
void ProfilingBackend::gather_rows(const float* x, const int32_t* rows, int n, int C, float* out) {
  timed("gather_rows", 0, [&] { inner_->gather_rows(x, rows, n, C, out); });
}
void ProfilingBackend::embed(const ModelWeights& w, const int32_t* tokens, int T, float* x) {
  timed("embed", 0, [&] { inner_->embed(w, tokens, T, x); });
}
void ProfilingBackend::layer_norm(const float* x, const Vector& w, const Vector& b, float* y, int T, int C) {
  timed("layer_norm", 0, [&] { inner_->layer_norm(x, w, b, y, T, C); });
}
void ProfilingBackend::group_norm(float* x, const Vector& w, const Vector& b, int T, int H, int N) {
  timed("group_norm", 0, [&] { inner_->group_norm(x, w, b, T, H, N); });
}
void ProfilingBackend::linear(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T, ProductOutput out) {
  // Products are told apart by weight format and shape: a model's big matrices and its LoRAs.
  std::string op = std::string("linear ") + dtype_name(W.dtype) + " " + std::to_string(W.rows) + "x" + std::to_string(W.cols);
  timed(std::move(op), double(W.nbytes()), [&] { inner_->linear(W, x, ldx, y, ldy, T, out); });
}
void ProfilingBackend::linears(std::span<const Product> products, int T) {
  // A set of products runs as one (a GPU launches them together): timed as one, named by its size and
  // weight formats, e.g. "linears 7x fp16".
  std::string formats;
  double bytes = 0;
  for (const Product& p : products) {
    const std::string f = dtype_name(p.W->dtype);
    if (formats.find(f) == std::string::npos) formats += (formats.empty() ? "" : "+") + f;
    bytes += double(p.W->nbytes());
  }
  timed("linears " + std::to_string(products.size()) + "x " + formats, bytes, [&] { inner_->linears(products, T); });
}
void ProfilingBackend::add(float* x, const float* y, size_t n) {
  timed("add", 0, [&] { inner_->add(x, y, n); });
}
void ProfilingBackend::mul(float* x, const float* y, size_t n) {
  timed("mul", 0, [&] { inner_->mul(x, y, n); });
}
void ProfilingBackend::token_shift(const float* xx, float* sx, std::span<const SeqSlice> seqs, int C) {
  timed("token_shift", 0, [&] { inner_->token_shift(xx, sx, seqs, C); });
}
void ProfilingBackend::norm_shift_mix(const float* x, const Vector& ln_w, const Vector& ln_b, std::span<const SeqSlice> seqs,
                                      std::span<const DeltaMix> mixes, int T, int C) {
  timed("norm_shift_mix", 0, [&] { inner_->norm_shift_mix(x, ln_w, ln_b, seqs, mixes, T, C); });
}
void ProfilingBackend::lerp_mix(const float* xx, const float* sx, const Vector& m, float* out, int T, int C) {
  timed("lerp_mix", 0, [&] { inner_->lerp_mix(xx, sx, m, out, T, C); });
}
void ProfilingBackend::delta_mix(const float* xx, const float* sx, std::span<const DeltaMix> mixes, int64_t ld_tok, int T, int C) {
  timed("delta_mix", 0, [&] { inner_->delta_mix(xx, sx, mixes, ld_tok, T, C); });
}
void ProfilingBackend::wkv4(std::span<const SeqSlice> seqs, int C, const Vector& w, const Vector& u, const float* k, const float* v, float* y) {
  timed("wkv4", 0, [&] { inner_->wkv4(seqs, C, w, u, k, v, y); });
}
void ProfilingBackend::wkv5(std::span<const SeqSlice> seqs, int H, int N, const float* r, const float* k, const float* v, const float* w_tok,
                            const Vector* w_fixed, const Vector& u, float* y) {
  timed("wkv5", 0, [&] { inner_->wkv5(seqs, H, N, r, k, v, w_tok, w_fixed, u, y); });
}
void ProfilingBackend::v7_attention(std::span<const SeqSlice> seqs, int H, int N, const V7Attention& in, float* y, int T) {
  timed("v7_attention", 0, [&] { inner_->v7_attention(seqs, H, N, in, y, T); });
}

}  // namespace skein
