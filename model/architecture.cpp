#include "model/architecture.h"

#include <set>

#include "common/error.h"

namespace skein {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::V4: return "v4";
    case Arch::V5_0: return "v5.0";
    case Arch::V5_1: return "v5.1";
    case Arch::V5_2: return "v5.2";
    case Arch::V6: return "v6";
    case Arch::V7: return "v7";
  }
  return "?";
}

size_t ModelDims::state_floats_per_layer() const {
  if (arch == Arch::V4) return 5 * size_t(n_embd);
  return 2 * size_t(n_embd) + size_t(n_head) * head_size * head_size;
}

ModelDims detect_architecture(const Checkpoint& ck) {
  const std::string& p = ck.path();
  ModelDims d;
  const TensorRef& emb = ck.get("emb.weight");
  if (emb.shape.size() != 2) fail(p, ": emb.weight must be 2-D, got ", emb.shape_str());
  d.vocab = int(emb.shape[0]);
  d.n_embd = int(emb.shape[1]);
  if (d.vocab <= 0 || d.n_embd <= 0) fail(p, ": emb.weight has an empty shape ", emb.shape_str());

  // Layer count from block indices; every index below the maximum must be present.
  std::set<int> layers;
  for (auto& [name, t] : ck.tensors()) {
    if (name.rfind("blocks.", 0) != 0) continue;
    size_t dot = name.find('.', 7);
    std::string idx = name.substr(7, dot == std::string::npos ? std::string::npos : dot - 7);
    if (idx.empty() || idx.size() > 6 || idx.find_first_not_of("0123456789") != std::string::npos)
      fail(p, ": tensor '", name, "' has a malformed block index");
    layers.insert(std::stoi(idx));
  }
  if (layers.empty()) fail(p, ": no blocks.N tensors: not an RWKV checkpoint");
  d.n_layer = *layers.rbegin() + 1;
  if (int(layers.size()) != d.n_layer) fail(p, ": blocks are not numbered 0..", d.n_layer - 1, " without gaps");

  // The generation is decided by block 0's own keys, so key order and layer count do not matter.
  auto has = [&](const std::string& k) { return ck.has("blocks.0." + k); };
  if (has("att.x_r") || has("att.w0") || has("att.k_k")) {
    d.arch = Arch::V7;
  } else if (has("att.time_maa_x") || has("att.time_maa_w1")) {
    d.arch = Arch::V6;
  } else if (has("att.ln_x.weight")) {
    const TensorRef& td = ck.get("blocks.0.att.time_decay");
    bool per_channel = td.shape.size() == 2 && td.shape[1] > 1;
    d.arch = per_channel ? Arch::V5_2 : has("att.gate.weight") ? Arch::V5_1 : Arch::V5_0;
  } else if (has("att.time_first") && has("att.time_decay")) {
    d.arch = Arch::V4;
  } else {
    fail(p, ": unknown architecture: block 0 has none of the RWKV v4/v5/v6/v7 attention keys");
  }

  switch (d.arch) {
    case Arch::V4: d.n_head = 1; break;
    case Arch::V5_0: case Arch::V5_1: case Arch::V5_2: d.n_head = int(ck.get("blocks.0.att.time_decay").shape.at(0)); break;
    case Arch::V6: d.n_head = int(ck.get("blocks.0.att.time_faaaa").shape.at(0)); break;
    case Arch::V7: d.n_head = int(ck.get("blocks.0.att.r_k").shape.at(0)); break;
  }
  if (d.n_head <= 0 || d.n_embd % d.n_head != 0) fail(p, ": head count ", d.n_head, " does not divide n_embd ", d.n_embd);
  d.head_size = d.n_embd / d.n_head;
  const TensorRef& fk = ck.get("blocks.0.ffn.key.weight");
  if (fk.shape.size() != 2) fail(p, ": blocks.0.ffn.key.weight must be 2-D, got ", fk.shape_str());
  d.dim_ffn = int(fk.shape[0]);
  d.has_time_state = has("att.time_state");
  return d;
}

}  // namespace skein
