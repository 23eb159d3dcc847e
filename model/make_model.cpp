#include "model/make_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/hash.h"
#include "kernels/numeric.h"
#include "model/pth_writer.h"

namespace skein {

Arch parse_make_model_arch(const std::string& s) {
  if (s == "v4") return Arch::V4;
  if (s == "v5.2" || s == "v5") return Arch::V5_2;
  if (s == "v6") return Arch::V6;
  if (s == "v7") return Arch::V7;
  fail("make-model: --arch must be v4, v5.2, v6 or v7, got '", s, "'");
}

namespace {

// How a tensor's values are drawn: uniform in [lo, hi], or a constant.
struct Init {
  float lo = 0, hi = 0;
};

struct Spec {
  PthTensorSpec t;
  Init init;
};

int round32(double v) { return std::max(32, int(std::lround(v / 32.0)) * 32); }

}  // namespace

uint64_t make_model(const MakeModelOptions& o, const std::string& path) {
  const int64_t C = o.n_embd, V = o.vocab, L = o.n_layer;
  if (L < 1 || C < 1 || V < 1) fail("make-model: layers, embd and vocab must be >= 1");
  const int64_t hs = o.arch == Arch::V4 ? C : o.head_size;
  if (hs < 1 || C % hs) fail("make-model: head size ", hs, " must divide n_embd ", C);
  const int64_t H = C / hs;
  if (o.dim_ffn < 0) fail("make-model: --ffn must be >= 1 (0: the generation's usual width), got ", o.dim_ffn);
  int64_t F = o.dim_ffn;
  if (F == 0) F = o.arch == Arch::V6 ? int64_t(C * 7 / 2 / 32 * 32) : 4 * C;
  if (F < 1) F = 32;

  std::vector<Spec> specs;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, Init init, bool keep_fp32 = false) {
    Spec s;
    s.t.name = name;
    s.t.dtype = keep_fp32 ? DType::F32 : o.dtype;
    s.t.shape = std::move(shape);
    s.init = init;
    specs.push_back(std::move(s));
  };
  auto lin = [&](const std::string& name, int64_t out, int64_t in, float gain = 1.0f) {
    float a = gain * std::sqrt(3.0f / float(in));
    add(name, {out, in}, {-a, a});
  };
  auto vec = [&](const std::string& name, Init init) { add(name, {1, 1, C}, init); };
  const Init one{1, 1}, zero{0, 0}, mix{0.2f, 0.9f};

  add("emb.weight", {V, C}, {-0.5f, 0.5f});
  for (int64_t i = 0; i < L; ++i) {
    std::string b = "blocks." + std::to_string(i) + ".";
    add(b + "ln1.weight", {C}, one); add(b + "ln1.bias", {C}, zero);
    add(b + "ln2.weight", {C}, one); add(b + "ln2.bias", {C}, zero);
    if (i == 0) { add(b + "ln0.weight", {C}, one); add(b + "ln0.bias", {C}, zero); }
    switch (o.arch) {
      case Arch::V4:
        add(b + "att.time_decay", {C}, {-4.0f, 1.0f});
        add(b + "att.time_first", {C}, {-1.0f, 1.0f});
        vec(b + "att.time_mix_k", mix); vec(b + "att.time_mix_v", mix); vec(b + "att.time_mix_r", mix);
        lin(b + "att.key.weight", C, C); lin(b + "att.value.weight", C, C);
        lin(b + "att.receptance.weight", C, C); lin(b + "att.output.weight", C, C, 0.5f);
        vec(b + "ffn.time_mix_k", mix); vec(b + "ffn.time_mix_r", mix);
        lin(b + "ffn.key.weight", F, C); lin(b + "ffn.receptance.weight", C, C); lin(b + "ffn.value.weight", C, F, 0.5f);
        break;
      case Arch::V5_2:
        vec(b + "att.time_mix_k", mix); vec(b + "att.time_mix_v", mix); vec(b + "att.time_mix_r", mix); vec(b + "att.time_mix_g", mix);
        add(b + "att.time_decay", {H, hs}, {-6.0f, -1.0f});
        add(b + "att.time_faaaa", {H, hs}, {-0.5f, 0.5f});
        lin(b + "att.receptance.weight", C, C); lin(b + "att.key.weight", C, C); lin(b + "att.value.weight", C, C);
        lin(b + "att.output.weight", C, C, 0.5f); lin(b + "att.gate.weight", C, C);
        add(b + "att.ln_x.weight", {C}, one); add(b + "att.ln_x.bias", {C}, zero);
        vec(b + "ffn.time_mix_k", mix); vec(b + "ffn.time_mix_r", mix);
        lin(b + "ffn.key.weight", F, C); lin(b + "ffn.receptance.weight", C, C); lin(b + "ffn.value.weight", C, F, 0.5f);
        break;
      case Arch::V6: {
        const int64_t D = C >= 4096 ? 64 : 32, DD = C >= 4096 ? 128 : 64;
        for (auto n : {"x", "w", "k", "v", "r", "g"}) vec(b + "att.time_maa_" + n, mix);
        add(b + "att.time_maa_w1", {C, 5 * D}, {-0.01f, 0.01f});
        add(b + "att.time_maa_w2", {5, D, C}, {-0.1f, 0.1f});
        vec(b + "att.time_decay", {-6.0f, -1.0f});
        add(b + "att.time_decay_w1", {C, DD}, {-0.01f, 0.01f});
        add(b + "att.time_decay_w2", {DD, C}, {-0.1f, 0.1f});
        add(b + "att.time_faaaa", {H, hs}, {-0.5f, 0.5f});
        lin(b + "att.receptance.weight", C, C); lin(b + "att.key.weight", C, C); lin(b + "att.value.weight", C, C);
        lin(b + "att.output.weight", C, C, 0.5f); lin(b + "att.gate.weight", C, C);
        add(b + "att.ln_x.weight", {C}, one); add(b + "att.ln_x.bias", {C}, zero);
        vec(b + "ffn.time_maa_k", mix); vec(b + "ffn.time_maa_r", mix);
        lin(b + "ffn.key.weight", F, C); lin(b + "ffn.receptance.weight", C, C); lin(b + "ffn.value.weight", C, F, 0.5f);
        break;
      }
      case Arch::V7: {
        // LoRA ranks as the RWKV-7 training code sizes them.
        const double sq = std::sqrt(double(C));
        const int64_t Dw = round32(1.8 * sq), Da = round32(1.8 * sq), Dv = round32(1.3 * sq), Dg = round32(0.6 * std::pow(double(C), 0.8));
        for (auto n : {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"}) vec(b + "att." + n, mix);
        vec(b + "att.w0", {-3.0f, 1.0f});
        add(b + "att.w1", {C, Dw}, {-0.05f, 0.05f}); add(b + "att.w2", {Dw, C}, {-0.1f, 0.1f});
        vec(b + "att.a0", {-0.5f, 0.5f});
        add(b + "att.a1", {C, Da}, {-0.05f, 0.05f}); add(b + "att.a2", {Da, C}, {-0.1f, 0.1f});
        if (i > 0) {
          vec(b + "att.v0", {0.5f, 1.0f});
          add(b + "att.v1", {C, Dv}, {-0.05f, 0.05f}); add(b + "att.v2", {Dv, C}, {-0.1f, 0.1f});
        }
        add(b + "att.g1", {C, Dg}, {-0.05f, 0.05f}); add(b + "att.g2", {Dg, C}, {-0.1f, 0.1f});
        vec(b + "att.k_k", {0.7f, 1.0f}); vec(b + "att.k_a", {0.8f, 1.0f});
        add(b + "att.r_k", {H, hs}, {-0.2f, 0.2f});
        lin(b + "att.receptance.weight", C, C); lin(b + "att.key.weight", C, C); lin(b + "att.value.weight", C, C);
        lin(b + "att.output.weight", C, C, 0.5f);
        add(b + "att.ln_x.weight", {C}, one); add(b + "att.ln_x.bias", {C}, zero);
        vec(b + "ffn.x_k", mix);
        lin(b + "ffn.key.weight", F, C); lin(b + "ffn.value.weight", C, F, 0.5f);
        break;
      }
      default: fail("make-model: unsupported architecture ", arch_name(o.arch));
    }
  }
  add("ln_out.weight", {C}, one); add("ln_out.bias", {C}, zero);
  lin("head.weight", V, C, 0.5f);

  std::vector<PthTensorSpec> tensors;
  uint64_t params = 0, bytes = 0;
  for (auto& s : specs) {
    tensors.push_back(s.t);
    uint64_t n = 1;
    for (auto d : s.t.shape) n *= uint64_t(d);
    params += n;
    bytes += n * dtype_size(s.t.dtype);
  }
  // A path it cannot write, or a shape too large for the disk, is refused before the writing (the disk
  // full, other writers there would fail too).
  check_writable(path);
  std::error_code ec;
  const std::string parent = std::filesystem::path(path).parent_path().string(), folder = parent.empty() ? "." : parent;
  const auto space = std::filesystem::space(folder, ec);
  if (!ec && bytes > space.available)
    fail("make-model: the checkpoint takes ", std::ceil(bytes / 1e8) / 10, " GB but ", folder, " has ", std::floor(space.available / 1e8) / 10, " GB free");
  write_pth(path, tensors, [&](size_t i, std::vector<uint8_t>& out) {
    const Spec& s = specs[i];
    // A hashed base per tensor: bases a multiple of splitmix's increment apart made every tensor its
    // predecessor's stream shifted by one value.
    const uint64_t rng = splitmix_at(o.seed, i);
    const int64_t n = int64_t(out.size() / dtype_size(s.t.dtype));
#pragma omp parallel for schedule(static) if (n >= (1 << 20))
    for (int64_t k = 0; k < n; ++k) {
      float u = float(splitmix_at(rng, uint64_t(k)) >> 40) * (1.0f / 16777216.0f);
      float v = s.init.lo + (s.init.hi - s.init.lo) * u;
      switch (s.t.dtype) {
        case DType::F32: std::memcpy(out.data() + 4 * k, &v, 4); break;
        case DType::F16: { uint16_t h = float_to_fp16(v); std::memcpy(out.data() + 2 * k, &h, 2); break; }
        case DType::BF16: { uint16_t h = float_to_bf16(v); std::memcpy(out.data() + 2 * k, &h, 2); break; }
        case DType::U8: out[k] = uint8_t(v); break;
      }
    }
  });
  return params;
}

}  // namespace skein
