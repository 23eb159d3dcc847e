#include "model/weights.h"

#include <cmath>
#include <cstring>

#include "common/error.h"
#include "kernels/numeric.h"
#include "model/quantize.h"

namespace skein {

const Vector& LayerWeights::v(const std::string& name) const {
  auto it = vec.find(name);
  if (it == vec.end()) fail("internal: layer has no vector '", name, "'");
  return it->second;
}

const Matrix& LayerWeights::m(const std::string& name) const {
  auto it = mat.find(name);
  if (it == mat.end()) fail("internal: layer has no matrix '", name, "'");
  return it->second;
}

size_t ModelWeights::matrix_bytes() const {
  size_t n = has_head ? head.nbytes() : 0;
  for (auto& l : layers)
    for (auto& [k, m] : l.mat) n += m.nbytes();
  return n;
}

size_t ModelWeights::resident_bytes() const {
  size_t n = matrix_bytes();
  if (has_embedding) n += emb.nbytes + (ln0_w.size() + ln0_b.size()) * sizeof(float);
  if (has_head) n += (ln_out_w.size() + ln_out_b.size()) * sizeof(float);
  for (auto& l : layers)
    for (auto& [k, v] : l.vec) n += v.size() * sizeof(float);
  return n;
}

namespace {

float element(const TensorRef& t, size_t i) {
  switch (t.dtype) {
    case DType::F32: { float f; std::memcpy(&f, t.data + 4 * i, 4); return f; }
    case DType::F16: { uint16_t h; std::memcpy(&h, t.data + 2 * i, 2); return fp16_to_float(h); }
    case DType::BF16: { uint16_t h; std::memcpy(&h, t.data + 2 * i, 2); return bf16_to_float(h); }
    case DType::U8: return float(t.data[i]);
  }
  return 0;
}

class Loader {
 public:
  Loader(const Checkpoint& ck, const ModelDims& d, const WeightFormat& f) : ck_(ck), d_(d), f_(f) {}

  const TensorRef& tensor(const std::string& name, std::initializer_list<int64_t> shape, bool squeeze) {
    const TensorRef& t = ck_.get(name);
    std::vector<int64_t> got, want(shape);
    for (auto s : t.shape)
      if (!squeeze || s != 1) got.push_back(s);
    if (squeeze) {
      std::vector<int64_t> w2;
      for (auto s : want) if (s != 1) w2.push_back(s);
      want = w2;
    }
    if (got != want) fail(ck_.path(), ": tensor '", name, "' has shape ", t.shape_str(), ", expected ", shape_text({shape.begin(), shape.size()}));
    if (t.dtype == DType::U8) fail(ck_.path(), ": tensor '", name, "' is uint8; expected fp32, fp16 or bf16");
    return t;
  }

  // 1-D parameter (any singleton dims allowed), converted to fp32.
  Vector vec(const std::string& name, std::initializer_list<int64_t> shape) {
    const TensorRef& t = tensor(name, shape, true);
    Vector v(size_t(t.numel()));
    for (size_t i = 0; i < v.size(); ++i) v[i] = element(t, i);
    return v;
  }

  // Stored [out][in] (nn.Linear layout): used in place.
  Matrix linear(const std::string& name, int64_t out, int64_t in) {
    const TensorRef& t = tensor(name, {out, in}, false);
    Matrix m;
    m.dtype = t.dtype;
    m.rows = out;
    m.cols = in;
    m.data = t.data;
    if (!f_.i8 && (!f_.dtype || *f_.dtype == t.dtype)) return m;  // used in place from the map
    Matrix prepared;
    try {
      prepared = f_.i8 ? quantize_i8(m, f_.dtype.value_or(DType::F32)) : convert_matrix(m, *f_.dtype);
    } catch (const Error& e) {
      fail(ck_.path(), ": tensor '", name, "': ", e.what());
    }
    ck_.release(t);  // the prepared copy is all we need: give the file pages back
    return prepared;
  }

  // Stored [in][out] (LoRA factors used as x @ W): transposed once to [out][in], in the format's dtype.
  Matrix lora(const std::string& name, int64_t in, int64_t out) {
    const TensorRef& t = tensor(name, {in, out}, false);
    Matrix m = float_format(transposed(t, 0, in, out));
    ck_.release(t);
    return m;
  }
  Matrix float_format(const Matrix& m) const { return f_.dtype ? convert_matrix(m, *f_.dtype) : m; }

  // One [in][out] slice of a stacked tensor, starting at element `offset`.
  static Matrix transposed(const TensorRef& t, size_t offset, int64_t in, int64_t out) {
    size_t es = dtype_size(t.dtype);
    auto buf = uninitialized_bytes(size_t(in * out) * es);  // every element written below
    for (int64_t i = 0; i < in; ++i)
      for (int64_t o = 0; o < out; ++o)
        std::memcpy(buf.get() + (size_t(o * in + i)) * es, t.data + (offset + size_t(i * out + o)) * es, es);
    Matrix m;
    m.dtype = t.dtype;
    m.rows = out;
    m.cols = in;
    m.owned = buf;
    m.data = buf.get();
    return m;
  }

  const Checkpoint& ck_;
  const ModelDims& d_;
  const WeightFormat& f_;
};

Vector map(Vector v, float (*f)(float)) {
  for (auto& x : v) x = f(x);
  return v;
}

// Per-head parameters ([H]) expand to one value per channel so every kernel sees [C].
Vector per_channel(const Vector& v, int H, int N) {
  if (int(v.size()) == H * N) return v;
  Vector out(size_t(H) * N);
  for (int h = 0; h < H; ++h)
    for (int n = 0; n < N; ++n) out[size_t(h) * N + n] = v[h];
  return out;
}

void load_layer(Loader& L, const ModelDims& d, int i, LayerWeights& lw) {
  const int64_t C = d.n_embd, F = d.dim_ffn, H = d.n_head, N = d.head_size;
  const std::string b = "blocks." + std::to_string(i) + ".";
  auto V = [&](const std::string& k, std::initializer_list<int64_t> s) { lw.vec[k] = L.vec(b + k, s); };
  auto M = [&](const std::string& k, const std::string& file_key, int64_t out, int64_t in) { lw.mat[k] = L.linear(b + file_key, out, in); };

  V("ln1.weight", {C}); V("ln1.bias", {C});
  V("ln2.weight", {C}); V("ln2.bias", {C});
  M("att.receptance", "att.receptance.weight", C, C);
  M("att.key", "att.key.weight", C, C);
  M("att.value", "att.value.weight", C, C);
  M("att.output", "att.output.weight", C, C);
  M("ffn.key", "ffn.key.weight", F, C);
  M("ffn.value", "ffn.value.weight", C, F);
  auto exp_neg_exp = [](float x) { return std::exp(-std::exp(x)); };
  auto neg_exp = [](float x) { return -std::exp(x); };
  auto exp_f = [](float x) { return std::exp(x); };

  switch (d.arch) {
    case Arch::V4:
      lw.vec["att.w"] = map(L.vec(b + "att.time_decay", {C}), neg_exp);
      V("att.time_first", {C});
      for (auto k : {"att.time_mix_k", "att.time_mix_v", "att.time_mix_r", "ffn.time_mix_k", "ffn.time_mix_r"}) V(k, {C});
      M("ffn.receptance", "ffn.receptance.weight", C, C);
      break;
    case Arch::V5_0: case Arch::V5_1: case Arch::V5_2: {
      bool v52 = d.arch == Arch::V5_2;
      Vector decay = v52 ? L.vec(b + "att.time_decay", {H, N}) : L.vec(b + "att.time_decay", {H});
      lw.vec["att.w"] = per_channel(map(decay, exp_neg_exp), int(H), int(N));
      // time_faaaa is the bonus itself; older files store time_first, whose exp is the bonus.
      if (L.ck_.has(b + "att.time_faaaa")) {
        Vector u = v52 ? L.vec(b + "att.time_faaaa", {H, N}) : L.vec(b + "att.time_faaaa", {H});
        lw.vec["att.u"] = per_channel(u, int(H), int(N));
      } else {
        Vector u = v52 ? L.vec(b + "att.time_first", {H, N}) : L.vec(b + "att.time_first", {H});
        lw.vec["att.u"] = per_channel(map(u, exp_f), int(H), int(N));
      }
      for (auto k : {"att.time_mix_k", "att.time_mix_v", "att.time_mix_r", "ffn.time_mix_k", "ffn.time_mix_r"}) V(k, {C});
      if (d.arch != Arch::V5_0) {
        V("att.time_mix_g", {C});
        M("att.gate", "att.gate.weight", C, C);
      }
      V("att.ln_x.weight", {C}); V("att.ln_x.bias", {C});
      M("ffn.receptance", "ffn.receptance.weight", C, C);
      break;
    }
    case Arch::V6: {
      for (auto k : {"att.time_maa_x", "att.time_maa_w", "att.time_maa_k", "att.time_maa_v", "att.time_maa_r", "att.time_maa_g",
                     "ffn.time_maa_k", "ffn.time_maa_r"})
        V(k, {C});
      V("att.time_decay", {C});
      lw.vec["att.u"] = L.vec(b + "att.time_faaaa", {H, N});
      const TensorRef& w1 = L.ck_.get(b + "att.time_maa_w1");
      if (w1.shape.size() != 2 || w1.shape[1] % 5) fail(L.ck_.path(), ": tensor '", b, "att.time_maa_w1' has shape ", w1.shape_str(), ", expected [C, 5*D]");
      int64_t D = w1.shape[1] / 5;
      lw.mat["att.maa_w1"] = L.lora(b + "att.time_maa_w1", C, 5 * D);
      const TensorRef& w2 = L.tensor(b + "att.time_maa_w2", {5, D, C}, false);
      for (int j = 0; j < 5; ++j) lw.mat["att.maa_w2." + std::to_string(j)] = L.float_format(Loader::transposed(w2, size_t(j) * D * C, D, C));
      const TensorRef& dw1 = L.ck_.get(b + "att.time_decay_w1");
      if (dw1.shape.size() != 2) fail(L.ck_.path(), ": tensor '", b, "att.time_decay_w1' must be 2-D");
      int64_t DD = dw1.shape[1];
      lw.mat["att.decay_w1"] = L.lora(b + "att.time_decay_w1", C, DD);
      lw.mat["att.decay_w2"] = L.lora(b + "att.time_decay_w2", DD, C);
      M("att.gate", "att.gate.weight", C, C);
      V("att.ln_x.weight", {C}); V("att.ln_x.bias", {C});
      M("ffn.receptance", "ffn.receptance.weight", C, C);
      break;
    }
    case Arch::V7: {
      for (auto k : {"att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g", "att.w0", "att.a0", "att.k_k", "att.k_a", "ffn.x_k"}) V(k, {C});
      lw.vec["att.r_k"] = L.vec(b + "att.r_k", {H, N});
      auto lora_pair = [&](const std::string& n) {
        const TensorRef& t1 = L.ck_.get(b + "att." + n + "1");
        if (t1.shape.size() != 2) fail(L.ck_.path(), ": tensor '", b, "att.", n, "1' must be 2-D, got ", t1.shape_str());
        int64_t D = t1.shape[1];
        lw.mat["att." + n + "1"] = L.lora(b + "att." + n + "1", C, D);
        lw.mat["att." + n + "2"] = L.lora(b + "att." + n + "2", D, C);
      };
      lora_pair("w");
      lora_pair("a");
      lora_pair("g");
      if (i > 0) {  // layer 0 sets v_first; the official loader drops its v0/v1/v2
        V("att.v0", {C});
        lora_pair("v");
      }
      V("att.ln_x.weight", {C}); V("att.ln_x.bias", {C});
      break;
    }
  }
  if (d.has_time_state) lw.vec["att.time_state"] = initial_wkv_state(L.ck_, d, i);
}

}  // namespace

ModelWeights load_weights(std::shared_ptr<const Checkpoint> ck, const ModelDims& dims, int first, int last, bool with_embedding,
                          bool with_head, const WeightFormat& format, std::set<int> streamed) {
  if (first < 0 || last > dims.n_layer || first > last) fail("internal: bad layer range [", first, ",", last, ")");
  ModelWeights w;
  w.dims = dims;
  w.checkpoint = ck;
  w.first_layer = first;
  w.last_layer = last;
  w.format = format;
  w.streamed = std::move(streamed);
  Loader L(*ck, dims, w.format);
  const int64_t C = dims.n_embd;
  if (with_embedding) {
    w.has_embedding = true;
    w.emb = L.tensor("emb.weight", {dims.vocab, C}, false);
    w.ln0_w = L.vec("blocks.0.ln0.weight", {C});
    w.ln0_b = L.vec("blocks.0.ln0.bias", {C});
  }
  w.layers.resize(size_t(last - first));
  for (int i = first; i < last; ++i) {
    if (w.streamed.count(i)) {
      // Validate now so a bad file fails at load, then give the pages back until the layer runs.
      LayerWeights probe;
      load_layer(L, dims, i, probe);
      w.release_layer_pages(i);
      continue;
    }
    load_layer(L, dims, i, w.layers[size_t(i - first)]);
  }
  if (with_head) {
    w.has_head = true;
    w.ln_out_w = L.vec("ln_out.weight", {C});
    w.ln_out_b = L.vec("ln_out.bias", {C});
    w.head = L.linear("head.weight", dims.vocab, C);
  }
  return w;
}

LayerWeights ModelWeights::load_streamed_layer(int layer) const {
  Loader L(*checkpoint, dims, format);
  LayerWeights lw;
  load_layer(L, dims, layer, lw);
  return lw;
}

namespace {
template <typename F>
void for_each_layer_tensor(const Checkpoint& ck, int layer, F f) {  // the checkpoint's "blocks.<layer>." tensors
  const std::string prefix = "blocks." + std::to_string(layer) + ".";
  for (auto it = ck.tensors().lower_bound(prefix); it != ck.tensors().end() && it->first.rfind(prefix, 0) == 0; ++it) f(it->second);
}
}  // namespace

void ModelWeights::release_layer_pages(int layer) const {
  for_each_layer_tensor(*checkpoint, layer, [&](const TensorRef& t) { checkpoint->release(t); });
}

size_t ModelWeights::streamed_bytes() const {
  size_t n = 0;
  for (int l : streamed) for_each_layer_tensor(*checkpoint, l, [&](const TensorRef& t) { n += prepared_tensor_bytes(t, dims, format); });
  return n;
}

uint64_t prepared_tensor_bytes(const TensorRef& t, const ModelDims& d, const WeightFormat& f) {
  const std::string& n = t.name;
  auto ends = [&](const char* s) { size_t k = std::strlen(s); return n.size() >= k && n.compare(n.size() - k, k, s) == 0; };
  const uint64_t numel = uint64_t(t.numel());
  if (n == "emb.weight") return t.nbytes;
  // v7 layer 0 has no value residual: the official loader drops v0/v1/v2 there, and so does Skein.
  if (d.arch == Arch::V7 && n.rfind("blocks.0.att.v", 0) == 0 && (ends(".v0") || ends(".v1") || ends(".v2"))) return 0;
  bool lora = ends("_w1") || ends("_w2") ||
              (d.arch == Arch::V7 && (ends("att.w1") || ends("att.w2") || ends("att.a1") || ends("att.a2") || ends("att.v1") ||
                                      ends("att.v2") || ends("att.g1") || ends("att.g2")));
  bool matrix = t.shape.size() == 2 && ends(".weight") && !lora && n.find(".ln") == std::string::npos;
  if (matrix && f.i8) return numel + 2 * sizeof(float) * uint64_t(t.shape[0] + t.shape[1]);
  if (matrix || lora) return numel * dtype_size(f.dtype.value_or(t.dtype));
  // Vectors become fp32; v5.0/5.1 per-head decay and bonus are expanded per channel.
  if ((ends("time_decay") || ends("time_first") || ends("time_faaaa")) && numel == uint64_t(d.n_head) && d.head_size > 1)
    return uint64_t(d.n_embd) * sizeof(float);
  return numel * sizeof(float);
}

Vector initial_wkv_state(const Checkpoint& ck, const ModelDims& d, int layer) {
  // v5/v6 files store it [head][value][key] (the official demos transpose it); v7 files store it in
  // v7's own state layout.
  const int64_t H = d.n_head, N = d.head_size;
  Loader L(ck, d, {});
  Vector ts = L.vec("blocks." + std::to_string(layer) + ".att.time_state", {H, N, N});
  if (d.arch == Arch::V7) return ts;
  Vector t2(ts.size());
  for (int64_t h = 0; h < H; ++h)
    for (int64_t x = 0; x < N; ++x)
      for (int64_t y = 0; y < N; ++y) t2[size_t((h * N + x) * N + y)] = ts[size_t((h * N + y) * N + x)];
  return t2;
}

}  // namespace skein
