// The device interface the model code is written against (cf. ggml-backend): memory for activations and
// state, and the handful of ops every RWKV generation is built from. The model never knows which device
// runs it. Activation and state pointers come from allocate(); weights are host containers that a
// device backend mirrors once.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/matrix.h"
#include "kernels/product_output.h"

namespace skein {

struct ModelWeights;
struct LayerWeights;

// One row's draw with the official PIPELINE semantics (coordinator/sampler): the penalties, then
// greedy (temperature 0: the first maximal logit) or softmax, top-p, top-k, temperature and the first
// token whose cumulative probability exceeds u. The host prepares it (counts, random stream); the
// backend that holds the logits executes it, so only token ids leave the device.
struct TokenPenalty {
  int32_t token;
  float amount;  // logits[token] -= amount; +inf bans the token
};
struct SampleRequest {
  float temperature = 1.0f, top_p = 1.0f;
  int top_k = 0;
  double u = 0;  // uniform in [0, 1)
  std::vector<TokenPenalty> penalties;  // one entry per token
  int logprobs = -1;  // >= 0: also score the drawn token and that many alternatives (worker/token_logprobs.h)
};

// One token-shift mix (v6, v7): out[t] = xx[t] + (sx[t] - xx[t]) * (m + m_tok[t]); m_tok (rows ld_tok
// apart) may be null, and may be out itself.
struct DeltaMix {
  const Vector* m;
  const float* m_tok;
  float* out;
};

// The inputs of Backend::v7_attention: activations [rows x C], per-channel weights [C].
struct V7Attention {
  const float *r, *w, *a, *g;
  float *k, *v, *kk;
  float* v_first;
  const float* gate;  // the value residual's gate before v0; null at the first layer
  const Vector *k_k, *k_a, *v0, *ln_w, *ln_b, *r_k;  // v0 is not read at the first layer
};

// One of several independent products over the same rows (Backend::linears).
struct Product {
  const Matrix* W;
  const float* x;
  int64_t ldx;
  float* y;
  int64_t ldy;
  ProductOutput out = {};
};

// One sequence of a batch as the recurrences see it: its rows [offset, offset + n) of the stacked
// activations, and its state for the op (device memory: the layer's part the op reads and writes).
struct SeqSlice {
  int offset = 0;
  int n = 0;
  float* state = nullptr;
};

// A recorded step (a CUDA graph and its inputs), owned by whoever replays it.
class StepRecording {
 public:
  virtual ~StepRecording() = default;
};

// A point in a device's sequence of work (profiling, worker/profiling_backend.h). By default the host
// clock, right for a device whose ops run synchronously; a GPU marks its stream.
class WorkMark {
 public:
  virtual ~WorkMark() = default;
};
struct HostMark final : WorkMark {
  std::chrono::steady_clock::time_point at = std::chrono::steady_clock::now();
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // ---- profiling: mark() the point the work enqueued so far reaches; seconds_between(a, b) waits
  // until b is reached and returns the device time from a to b (marks of this backend).
  virtual std::unique_ptr<WorkMark> mark() { return std::make_unique<HostMark>(); }
  virtual double seconds_between(const WorkMark& a, const WorkMark& b) {
    return std::chrono::duration<double>(static_cast<const HostMark&>(b).at - static_cast<const HostMark&>(a).at).count();
  }

  // ---- recording of repeated steps (decode), where the device has it (CUDA graphs).
  // record(step) runs `step` (a sequence of the ops below) once and returns a recording of it, or null
  // when this backend cannot record (it then ran the step directly). replay(r, step) runs the recorded
  // ops again with the small host inputs (token ids, batch tables) that `step` produces now; it returns
  // false, having run nothing, when the recording no longer fits (the caller then drops it).
  virtual bool can_record() const { return false; }
  virtual std::unique_ptr<StepRecording> record(const std::function<void()>& step) {
    step();
    return nullptr;
  }
  virtual bool replay(StepRecording& r, const std::function<void()>& step) { return false; }

  // ---- streamed layers (*N+). A backend that streams from host memory (a GPU) keeps such layers
  // prepared in host memory (hold_in_host, once) and on the device only while they run: bring_in before
  // a layer's ops (its copy may already be under way from prefetch), let_go after them. Otherwise the
  // model prepares a streamed layer from the file at each use.
  virtual bool streams_from_host() const { return false; }
  virtual void hold_in_host(const LayerWeights& lw) {}
  virtual void prefetch(const LayerWeights& lw) {}
  virtual void bring_in(const LayerWeights& lw) {}
  virtual void let_go(const LayerWeights& lw) {}

  // ---- memory (counts are in floats)
  virtual float* allocate(size_t n) = 0;
  virtual void release(float* p) = 0;
  virtual void to_device(float* dst, const float* host, size_t n) = 0;
  virtual void to_host(float* host, const float* src, size_t n) = 0;
  virtual void copy(float* dst, const float* src, size_t n) = 0;
  // Draws one token per row of logits [n x V] (device memory, modified: penalties are applied in place)
  // into tokens (host).
  virtual void sample(float* logits, int n, int V, std::span<const SampleRequest> rows, int32_t* tokens) = 0;
  // out[i] = x[rows[i]] for n rows of C (rows are host indices): the rows that go to the head.
  virtual void gather_rows(const float* x, const int32_t* rows, int n, int C, float* out) = 0;

  // ---- ops; T rows of C (or H heads of N) values each
  // x[t] = ln0(emb[tokens[t]]) (or the override table's row)
  virtual void embed(const ModelWeights& w, const int32_t* tokens, int T, float* x) = 0;
  virtual void layer_norm(const float* x, const Vector& w, const Vector& b, float* y, int T, int C) = 0;
  // Per-head normalisation in place (ln_x), eps 64e-5 in every official generation.
  virtual void group_norm(float* x, const Vector& w, const Vector& b, int T, int H, int N) = 0;
  // y[t*ldy + o] = sum_i W[o][i] x[t*ldx + i], or its activation (of it plus out.bias[o], a weight
  // vector of W.rows values), or y += it (ProductOutput)
  virtual void linear(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T, ProductOutput out = {}) = 0;
  // Independent products over the same T rows (no product's y overlaps another's x or y), in one go
  // where the device can: a GPU launches a decode step's small products together with the large ones.
  virtual void linears(std::span<const Product> products, int T) {
    for (const Product& p : products) linear(*p.W, p.x, p.ldx, p.y, p.ldy, T, p.out);
  }
  virtual void add(float* x, const float* y, size_t n) = 0;  // x += y
  virtual void mul(float* x, const float* y, size_t n) = 0;  // x *= y

  // Per sequence (state = prev [C]): sx[first] = prev, sx[t] = xx[t-1]; then prev = xx[last].
  virtual void token_shift(const float* xx, float* sx, std::span<const SeqSlice> seqs, int C) = 0;
  // delta_mix of layer_norm(x) and its token shift (token_shift's state update included), without
  // xx and sx in between: a GPU does a decode step's norm, shift and mixes in one launch. The
  // mixes' m_tok must be null; seqs are in row order.
  virtual void norm_shift_mix(const float* x, const Vector& ln_w, const Vector& ln_b, std::span<const SeqSlice> seqs,
                              std::span<const DeltaMix> mixes, int T, int C) = 0;
  // out = xx*m + sx*(1-m)   (v4, v5)
  virtual void lerp_mix(const float* xx, const float* sx, const Vector& m, float* out, int T, int C) = 0;
  // Every mix of `mixes` over the same rows in one pass (v7 mixes each token six ways, v6 five).
  virtual void delta_mix(const float* xx, const float* sx, std::span<const DeltaMix> mixes, int64_t ld_tok, int T, int C) = 0;

  // The recurrences, every sequence of the batch in one call (a GPU launches once, not once per
  // sequence). Activations are [rows x C]; each slice's state is the op's part of that sequence's layer state.
  // v4: state = aa, bb, pp [3 x C].
  virtual void wkv4(std::span<const SeqSlice> seqs, int C, const Vector& w, const Vector& u, const float* k, const float* v, float* y) = 0;
  // v5/v6: state = S [H x N x N]; w_tok: per-token decay [rows x C] (v6) or null to use w_fixed [C] (v5).
  virtual void wkv5(std::span<const SeqSlice> seqs, int H, int N, const float* r, const float* k, const float* v, const float* w_tok,
                    const Vector* w_fixed, const Vector& u, float* y) = 0;
  // v7's attention between its products and its output product, per head of each token in the
  // official order: the keys, kk = normalize(k*k_k) and k = k*(1+(a-1)*k_a); the value residual,
  // v += (v_first - v)*sigmoid(gate + v0), or at the first layer (gate null) v_first = v; wkv7 on the
  // state S [H x N x N]; and y = (ln_x(wkv) + sum(r*k*r_k)*v)*g. k, v and kk are the op's scratch:
  // what they hold afterwards is unspecified (a GPU decode step does it all in one launch that writes
  // only y, v_first and the state).
  virtual void v7_attention(std::span<const SeqSlice> seqs, int H, int N, const V7Attention& in, float* y, int T) = 0;
};

// RAII device buffer.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend& b, size_t n) : b_(&b), p_(n ? b.allocate(n) : nullptr), n_(n) {}
  ~DeviceBuffer() { if (p_) b_->release(p_); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : b_(o.b_), p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      if (p_) b_->release(p_);
      b_ = o.b_; p_ = o.p_; n_ = o.n_;
      o.p_ = nullptr; o.n_ = 0;
    }
    return *this;
  }
  float* get() const { return p_; }
  size_t size() const { return n_; }
  Backend* backend() const { return b_; }

 private:
  Backend* b_ = nullptr;
  float* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace skein
