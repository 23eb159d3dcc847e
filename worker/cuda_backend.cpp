#include "worker/cuda_backend.h"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "model/weights.h"

namespace skein {

namespace {
cuda::WeightType weight_type(DType d) {
  switch (d) {
    case DType::F32: return cuda::WeightType::F32;
    case DType::F16: return cuda::WeightType::F16;
    case DType::BF16: return cuda::WeightType::BF16;
    case DType::U8: return cuda::WeightType::U8;
  }
  return cuda::WeightType::F32;
}
}  // namespace

CudaBackend::CudaBackend(int device) : device_(device) {
  int n = cuda::device_count();
  if (device < 0 || device >= n) fail("cuda:", device, " does not exist (this machine has ", n, " CUDA devices)");
  // The products run on tf32 tensor cores (mma.sync), which compute capability 8.0 introduced.
  if (const cuda::DeviceInfo info = cuda::device_info(device); info.sm < 80)
    fail("cuda:", device, " (", info.name, ") has compute capability ", info.sm / 10, ".", info.sm % 10, "; Skein's CUDA kernels need 8.0 or newer");
  const char* g = std::getenv("SKEIN_CUDA_GRAPHS");
  graphs_ = !(g && std::string(g) == "0");
  select();
  cuda::prepare_products();
}

CudaBackend::~CudaBackend() {
  select();
  for (auto& [h, d] : mirrors_) cuda::free_bytes(d);
  for (auto& s : slots_) {
    if (s.ready) cuda::wait(s.ready);  // a prefetch may still be copying into the slot
    if (s.free) cuda::wait(s.free);
    cuda::free_bytes(s.dev);
    cuda::destroy(s.ready);
    cuda::destroy(s.free);
  }
  cuda::synchronize();
  for (auto& [lw, h] : held_) cuda::free_pinned(h.pinned);
}

namespace {
size_t aligned(size_t n) { return (n + 255) / 256 * 256; }  // device and pinned blocks start on 256 bytes
}  // namespace

// ---- streamed layers
namespace {
template <typename F>
void for_each_tensor(const LayerWeights& lw, F f) {  // every host array a layer's ops read
  for (auto& [name, v] : lw.vec) f(static_cast<const void*>(v.data()), v.size() * sizeof(float));
  for (auto& [name, m] : lw.mat) {
    f(m.data, size_t(m.rows) * size_t(m.cols) * dtype_size(m.dtype));
    if (m.quant)
      for (const Vector* q : {&m.quant->rx, &m.quant->mx, &m.quant->ry, &m.quant->my}) f(static_cast<const void*>(q->data()), q->size() * sizeof(float));
  }
}
}  // namespace

void CudaBackend::hold_in_host(const LayerWeights& lw) {
  select();
  HeldLayer h;
  for_each_tensor(lw, [&](const void* p, size_t n) {
    h.parts.push_back({p, h.bytes});
    h.bytes += aligned(n);
  });
  h.pinned = static_cast<char*>(cuda::alloc_pinned(h.bytes));
  size_t i = 0;
  for_each_tensor(lw, [&](const void* p, size_t n) { std::memcpy(h.pinned + h.parts[i++].second, p, n); });
  slot_bytes_ = std::max(slot_bytes_, h.bytes);
  held_[&lw] = std::move(h);
}

CudaBackend::Slot& CudaBackend::slot_for(const LayerWeights& lw) {
  for (auto& s : slots_)
    if (s.layer == &lw) return s;
  Slot& s = slots_[0].last_use <= slots_[1].last_use ? slots_[0] : slots_[1];  // the one used longer ago
  auto it = held_.find(&lw);
  if (it == held_.end()) fail("internal: a streamed layer was not held in host memory");
  if (!s.dev) {
    s.dev = static_cast<char*>(cuda::alloc_bytes(slot_bytes_));
    s.ready = cuda::new_event();
    s.free = cuda::new_event();
    cuda::record(s.free);
  }
  cuda::copy_stream_waits(s.free);  // the layer that used this slot has finished
  cuda::upload_on_copy_stream(s.dev, it->second.pinned, it->second.bytes);
  cuda::record_on_copy_stream(s.ready);
  s.layer = &lw;
  s.last_use = ++uses_;
  return s;
}

void CudaBackend::prefetch(const LayerWeights& lw) {
  select();
  slot_for(lw);
}

void CudaBackend::bring_in(const LayerWeights& lw) {
  select();
  Slot& s = slot_for(lw);
  s.last_use = ++uses_;
  cuda::stream_waits(s.ready);
  const HeldLayer& h = held_.at(&lw);
  for (auto& [p, off] : h.parts) transient_[p] = s.dev + off;
}

void CudaBackend::let_go(const LayerWeights& lw) {
  select();
  for (auto& s : slots_)
    if (s.layer == &lw) cuda::record(s.free);
  transient_.clear();
}

void CudaBackend::select() const { cuda::set_device(device_); }

bool CudaBackend::launching() const {
  select();
  return mode_ == Mode::Run || mode_ == Mode::Capture;
}

// ---- CUDA graphs. A recording owns its graph and its inputs: a pinned host area and a device arena,
// one slice per host input of the step in call order. The graph's upload nodes copy area -> arena, so a
// replay only rewrites the area (the same calls with the same sizes) and launches.
struct CudaBackend::Recording final : StepRecording {
  int device = 0;
  cuda::Graph* graph = nullptr;
  char* host = nullptr;  // pinned
  char* dev = nullptr;
  size_t bytes = 0, cursor = 0;
  std::vector<size_t> sizes;  // each input's size, in call order
  size_t next = 0;            // the input a refill is at
  bool mismatch = false;      // a refill's calls differ from the recorded ones
  uint64_t epoch = 0;         // cuda::workspace_epoch() when recorded
  cuda::Event* done = nullptr;  // after the last launch: the area may be rewritten
  ~Recording() override {
    cuda::set_device(device);
    if (done) cuda::wait(done);
    cuda::destroy(graph);
    cuda::destroy(done);
    cuda::free_bytes(dev);
    cuda::free_pinned(host);
  }
};

void* CudaBackend::put(StepBuffer& b, const void* host, size_t bytes) {
  select();
  switch (mode_) {
    case Mode::Run:
      b.reserve(bytes);
      cuda::stage(b.p, host, bytes);
      return b.p;
    case Mode::Size:
      rec_->sizes.push_back(bytes);
      rec_->bytes += aligned(bytes);
      return nullptr;
    case Mode::Capture:
    case Mode::Fill: {
      Recording& r = *rec_;
      if (r.next >= r.sizes.size() || r.sizes[r.next] != bytes) {  // not the calls that were sized
        if (mode_ == Mode::Capture) fail("internal: a recorded step's inputs changed between its passes");
        r.mismatch = true;
        return nullptr;
      }
      ++r.next;
      char* h = r.host + r.cursor;
      char* d = r.dev + r.cursor;
      r.cursor += aligned(bytes);
      std::memcpy(h, host, bytes);
      if (mode_ == Mode::Capture) cuda::upload_pinned(d, h, bytes);
      return d;
    }
  }
  return nullptr;
}

void CudaBackend::run_in(Mode mode, Recording* r, const std::function<void()>& step) {
  struct Reset {  // every way out leaves the backend running ops again
    CudaBackend& b;
    ~Reset() {
      b.mode_ = Mode::Run;
      b.rec_ = nullptr;
    }
  } reset{*this};
  mode_ = mode;
  rec_ = r;
  step();
}

std::unique_ptr<StepRecording> CudaBackend::record(const std::function<void()>& step) {
  select();
  auto r = std::make_unique<Recording>();
  r->device = device_;
  run_in(Mode::Size, r.get(), step);  // pass 1: the step's host inputs, without running anything
  r->dev = static_cast<char*>(cuda::alloc_bytes(r->bytes));
  r->host = static_cast<char*>(cuda::alloc_pinned(r->bytes));
  r->done = cuda::new_event();
  r->epoch = cuda::workspace_epoch();
  cuda::begin_capture();  // pass 2: the launches into a graph
  try {
    run_in(Mode::Capture, r.get(), step);
  } catch (...) {  // e.g. a weight not yet on the device: nothing ran, so run the step directly
    cuda::end_capture(false);
    step();
    return nullptr;
  }
  r->graph = cuda::end_capture(!r->mismatch);
  if (!r->graph || cuda::workspace_epoch() != r->epoch) {
    step();
    return nullptr;
  }
  cuda::launch(r->graph);
  cuda::record(r->done);
  ++recorded_steps_;
  return r;
}

bool CudaBackend::replay(StepRecording& base, const std::function<void()>& step) {
  auto* r = dynamic_cast<Recording*>(&base);
  if (!r || r->device != device_ || cuda::workspace_epoch() != r->epoch) return false;
  select();
  cuda::wait(r->done);  // the last launch has read the input area
  r->cursor = 0;
  r->next = 0;
  r->mismatch = false;
  run_in(Mode::Fill, r, step);
  if (r->mismatch || r->next != r->sizes.size()) return false;
  cuda::launch(r->graph);
  cuda::record(r->done);
  ++replayed_steps_;
  return true;
}

namespace {
struct StreamMark final : WorkMark {
  cuda::Event* event = nullptr;
  ~StreamMark() override { cuda::destroy(event); }
};
}  // namespace

std::unique_ptr<WorkMark> CudaBackend::mark() {
  select();
  auto m = std::make_unique<StreamMark>();
  m->event = cuda::new_event(true);
  cuda::record(m->event);
  return m;
}

double CudaBackend::seconds_between(const WorkMark& a, const WorkMark& b) {
  select();
  return cuda::elapsed_seconds(static_cast<const StreamMark&>(a).event, static_cast<const StreamMark&>(b).event);
}

const void* CudaBackend::mirror(const void* host, size_t bytes) {
  if (!transient_.empty())
    if (auto t = transient_.find(host); t != transient_.end()) return t->second;
  auto it = mirrors_.find(host);
  if (it != mirrors_.end()) return it->second;
  if (mode_ == Mode::Capture) fail("internal: a weight is uploaded while a step is recorded");
  void* d = cuda::alloc_bytes(bytes);
  cuda::upload_bytes(d, host, bytes);
  mirrored_bytes_ += bytes;
  mirrors_.emplace(host, d);
  return d;
}

void* CudaBackend::StepBuffer::reserve(size_t bytes) {
  if (cap < bytes) {
    cuda::free_bytes(p);
    cap = std::max(bytes, cap * 2);
    p = cuda::alloc_bytes(cap);
  }
  return p;
}
CudaBackend::StepBuffer::~StepBuffer() { cuda::free_bytes(p); }

// The batch's slices, copied to the device for the launch (the same layout on both sides).
static_assert(sizeof(SeqSlice) == sizeof(cuda::Slice) && offsetof(SeqSlice, state) == offsetof(cuda::Slice, state));
const cuda::Slice* CudaBackend::table(std::span<const SeqSlice> seqs) {
  return static_cast<const cuda::Slice*>(put(slices_, seqs.data(), seqs.size_bytes()));
}

CudaBackend::DeviceMatrix CudaBackend::mat(const Matrix& W) {
  auto it = matrices_.find(W.data);
  if (it != matrices_.end()) return it->second;
  const bool streamed = transient_.count(W.data) != 0;  // a streamed layer's: not cached
  DeviceMatrix m;
  m.type = weight_type(W.dtype);
  m.data = const_cast<void*>(mirror(W.data, size_t(W.rows) * size_t(W.cols) * dtype_size(W.dtype)));
  if (W.dtype == DType::U8) {
    if (!W.quant) fail("internal: a uint8 matrix without its quantization parameters");
    m.rx = const_cast<float*>(vec(W.quant->rx));
    m.mx = const_cast<float*>(vec(W.quant->mx));
    m.ry = const_cast<float*>(vec(W.quant->ry));
    m.my = const_cast<float*>(vec(W.quant->my));
  }
  if (streamed) return m;
  return matrices_.emplace(W.data, m).first->second;
}

// A buffer (re)allocated inside a recorded step would be owned by the graph (capture) or leave the
// graph pointing at freed memory (refill): the recording is abandoned instead.
float* CudaBackend::allocate(size_t n) {
  select();
  if (mode_ == Mode::Capture) fail("internal: memory is allocated while a step is recorded");
  if (mode_ == Mode::Fill) rec_->mismatch = true;
  return cuda::alloc_floats(n);
}
void CudaBackend::release(float* p) {
  select();
  if (mode_ == Mode::Fill || mode_ == Mode::Capture) rec_->mismatch = true;
  cuda::free_floats(p);
}
void CudaBackend::to_device(float* dst, const float* host, size_t n) {
  select();
  cuda::upload(dst, host, n);
}
void CudaBackend::to_host(float* host, const float* src, size_t n) {
  select();
  cuda::download(host, src, n);
}
void CudaBackend::copy(float* dst, const float* src, size_t n) {
  if (!launching()) return;
  cuda::copy(dst, src, n);
}

void CudaBackend::sample(float* logits, int n, int V, std::span<const SampleRequest> rows, int32_t* tokens) {
  if (n <= 0) return;
  std::vector<cuda::SampleRow> table;
  std::vector<cuda::Penalty> penalties;
  for (int i = 0; i < n; ++i) {
    const SampleRequest& r = rows[size_t(i)];
    int begin = int(penalties.size());
    for (auto& p : r.penalties) penalties.push_back({p.token, p.amount});
    table.push_back({r.temperature, r.top_p, r.top_k, begin, int(penalties.size()), r.u});
  }
  auto* d_rows = static_cast<cuda::SampleRow*>(put(sample_rows_, table.data(), table.size() * sizeof(cuda::SampleRow)));
  auto* d_pen = static_cast<cuda::Penalty*>(put(sample_penalties_, penalties.data(), penalties.size() * sizeof(cuda::Penalty)));
  if (!launching()) return;
  float* probs = static_cast<float*>(sample_probs_.reserve(size_t(n) * size_t(V) * sizeof(float)));
  auto* d_tokens = static_cast<int32_t*>(sample_tokens_.reserve(size_t(n) * sizeof(int32_t)));
  cuda::sample(logits, n, V, d_rows, d_pen, probs, d_tokens);
  cuda::download_bytes(tokens, d_tokens, size_t(n) * sizeof(int32_t));
}

void CudaBackend::gather_rows(const float* x, const int32_t* rows, int n, int C, float* out) {
  const auto* d_rows = static_cast<const int32_t*>(put(rows_, rows, size_t(n) * sizeof(int32_t)));
  if (!launching()) return;
  cuda::gather_rows(x, d_rows, n, C, out);
}

void CudaBackend::embed(const ModelWeights& w, const int32_t* tokens, int T, float* x) {
  const int C = w.dims.n_embd;
  if (w.emb_override) {  // already normalised rows (the tests' official table): gathered on the host
    std::vector<float> rows(size_t(T) * C);
    for (int t = 0; t < T; ++t)
      std::copy_n(w.emb_override->data() + size_t(tokens[t]) * C, C, rows.data() + size_t(t) * C);
    const auto* d_rows = static_cast<const float*>(put(embedded_rows_, rows.data(), rows.size() * sizeof(float)));
    if (launching()) cuda::copy(x, d_rows, rows.size());
    return;
  }
  const auto* toks = static_cast<const int32_t*>(put(tokens_, tokens, size_t(T) * sizeof(int32_t)));
  if (!launching()) return;
  const void* table = mirror(w.emb.data, w.emb.nbytes);
  cuda::embed(table, weight_type(w.emb.dtype), vec(w.ln0_w), vec(w.ln0_b), toks, T, C, x);
}

void CudaBackend::layer_norm(const float* x, const Vector& w, const Vector& b, float* y, int T, int C) {
  if (!launching()) return;
  cuda::layer_norm(x, vec(w), vec(b), y, T, C);
}
void CudaBackend::group_norm(float* x, const Vector& w, const Vector& b, int T, int H, int N) {
  if (!launching()) return;
  cuda::group_norm(x, vec(w), vec(b), T, H, N);
}
cuda::LinearJob CudaBackend::job(const Product& p) {
  const Matrix& W = *p.W;
  const DeviceMatrix m = mat(W);
  ProductOutput out = p.out;
  if (out.bias) out.bias = static_cast<const float*>(mirror(out.bias, size_t(W.rows) * sizeof(float)));  // a weight vector's device copy
  return {m.data, m.type, m.rx, m.mx, m.ry, m.my, W.rows, W.cols, p.x, p.ldx, p.y, p.ldy, out};
}
void CudaBackend::linear(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T, ProductOutput out) {
  if (!launching()) return;
  const cuda::LinearJob j = job({&W, x, ldx, y, ldy, out});
  cuda::linears(&j, 1, T);
}
void CudaBackend::linears(std::span<const Product> products, int T) {
  if (!launching()) return;
  std::vector<cuda::LinearJob> jobs;
  jobs.reserve(products.size());
  for (const Product& p : products) jobs.push_back(job(p));
  cuda::linears(jobs.data(), int(jobs.size()), T);
}
void CudaBackend::add(float* x, const float* y, size_t n) {
  if (!launching()) return;
  cuda::add(x, y, n);
}
void CudaBackend::mul(float* x, const float* y, size_t n) {
  if (!launching()) return;
  cuda::mul(x, y, n);
}
void CudaBackend::token_shift(const float* xx, float* sx, std::span<const SeqSlice> seqs, int C) {
  const cuda::Slice* t = table(seqs);
  if (!launching()) return;
  int longest = 0;
  for (auto& s : seqs) longest = std::max(longest, s.n);
  cuda::token_shift(xx, sx, t, int(seqs.size()), C, longest);
}
void CudaBackend::norm_shift_mix(const float* x, const Vector& ln_w, const Vector& ln_b, std::span<const SeqSlice> seqs,
                                 std::span<const DeltaMix> mixes, int T, int C) {
  int row = 0;
  for (const SeqSlice& s : seqs) {  // the kernel finds a row's sequence by bisection
    if (s.offset != row || s.n < 0) fail("internal: norm_shift_mix needs the sequences in row order");
    row += s.n;
  }
  if (row != T) fail("internal: norm_shift_mix over ", T, " rows for sequences of ", row);
  // The state moves once, so every mix is in the one launch.
  if (mixes.size() > size_t(cuda::Mixes::kMax)) fail("internal: norm_shift_mix takes at most ", cuda::Mixes::kMax, " mixes");
  for (const DeltaMix& m : mixes)
    if (m.m_tok) fail("internal: norm_shift_mix takes no token-dependent mix");
  const cuda::Slice* t = table(seqs);
  if (!launching()) return;
  cuda::Mixes batch;
  for (const DeltaMix& m : mixes) batch.mix[batch.count++] = {vec(*m.m), nullptr, m.out};
  cuda::norm_shift_mix(x, vec(ln_w), vec(ln_b), t, int(seqs.size()), batch, T, C);
}
void CudaBackend::lerp_mix(const float* xx, const float* sx, const Vector& m, float* out, int T, int C) {
  if (!launching()) return;
  cuda::lerp_mix(xx, sx, vec(m), out, T, C);
}
void CudaBackend::delta_mix(const float* xx, const float* sx, std::span<const DeltaMix> mixes, int64_t ld_tok, int T, int C) {
  if (!launching()) return;
  for (size_t first = 0; first < mixes.size(); first += cuda::Mixes::kMax) {
    cuda::Mixes batch;
    for (size_t i = first; i < std::min(mixes.size(), first + cuda::Mixes::kMax); ++i)
      batch.mix[batch.count++] = {vec(*mixes[i].m), mixes[i].m_tok, mixes[i].out};
    cuda::delta_mix(xx, sx, batch, ld_tok, T, C);
  }
}
void CudaBackend::wkv4(std::span<const SeqSlice> seqs, int C, const Vector& w, const Vector& u, const float* k, const float* v, float* y) {
  const cuda::Slice* t = table(seqs);
  if (!launching()) return;
  cuda::wkv4(t, int(seqs.size()), C, vec(w), vec(u), k, v, y);
}
void CudaBackend::wkv5(std::span<const SeqSlice> seqs, int H, int N, const float* r, const float* k, const float* v, const float* w_tok,
                       const Vector* w_fixed, const Vector& u, float* y) {
  const cuda::Slice* t = table(seqs);
  if (!launching()) return;
  cuda::wkv5(t, int(seqs.size()), H, N, r, k, v, w_tok, w_fixed ? vec(*w_fixed) : nullptr, vec(u), y);
}
void CudaBackend::v7_attention(std::span<const SeqSlice> seqs, int H, int N, const V7Attention& in, float* y, int T) {
  const cuda::Slice* t = table(seqs);
  if (!launching()) return;
  const bool decode = std::all_of(seqs.begin(), seqs.end(), [](const SeqSlice& s) { return s.n == 1; });
  const cuda::V7AttentionArgs args{in.r, in.w, in.a, in.g, in.k, in.v, in.kk, in.v_first, in.gate, vec(*in.k_k), vec(*in.k_a),
                                   in.v0 ? vec(*in.v0) : nullptr, vec(*in.ln_w), vec(*in.ln_b), vec(*in.r_k)};
  cuda::v7_attention(t, int(seqs.size()), H, N, args, y, T, decode);
}

}  // namespace skein
