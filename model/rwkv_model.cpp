#include "model/rwkv_model.h"

#include <algorithm>
#include <string>

#include "common/error.h"

namespace skein {

namespace {
// Scratch slots; each grows to the largest batch seen.
enum Slot { kXX, kSX, kR, kK, kV, kW, kA, kG, kY, kOut, kT0, kT1, kT2, kT3, kT4, kT5, kT6, kT7, kKK, kLoraA, kLoraG, kLoraV, kHeadIn, kLogits, kSlots };
}  // namespace

RwkvModel::RwkvModel(ModelWeights weights, Backend& backend) : w_(std::move(weights)), be_(backend), scratch_(kSlots) {
  for (int l : w_.streamed) {
    if (be_.streams_from_host()) {
      LayerWeights& lw = held_[l] = w_.load_streamed_layer(l);
      be_.hold_in_host(lw);
      if (w_.dims.has_time_state) streamed_time_state_[l] = lw.v("att.time_state");
    } else if (w_.dims.has_time_state) {
      streamed_time_state_[l] = w_.load_streamed_layer(l).v("att.time_state");
    }
    w_.release_layer_pages(l);
  }
}

std::vector<SeqSlice> RwkvModel::slices(const std::vector<Seq>& seqs, int l, size_t state_offset) {
  std::vector<SeqSlice> out;
  out.reserve(seqs.size());
  for (auto& s : seqs) out.push_back({s.offset, s.n, s.state->layer(l) + state_offset});
  return out;
}

uint64_t RwkvModel::scratch_bytes(const ModelDims& d, int rows, bool layers, bool head) {
  const uint64_t R = uint64_t(std::max(rows, 0)), C = uint64_t(d.n_embd);
  uint64_t floats = 0;
  // Every layer slot holds rows of n_embd, but kT1: the FFN's hidden rows (wider than the LoRA ones).
  if (layers) floats += R * ((kHeadIn - 1) * C + std::max(C, uint64_t(d.dim_ffn)));
  if (head) floats += R * (C + uint64_t(d.vocab));
  return floats * sizeof(float) * 3 / 2;
}

float* RwkvModel::scratch(int slot, size_t n) {
  if (scratch_[slot].size() < n) {
    if (slot < kHeadIn) ++scratch_epoch_;  // recorded steps (layers only, not the head) point at the old buffer
    scratch_[slot] = DeviceBuffer(be_, std::max(n, scratch_[slot].size() * 3 / 2));
  }
  return scratch_[slot].get();
}

// A batch size's first decode step runs directly (sizing buffers, uploading weights); its second is
// recorded; later ones replay the recording with the step's new inputs (the sequences' states).
void RwkvModel::run_recorded(int batch, const float* x, const float* v_first, const std::function<void()>& step) {
  constexpr size_t kMaxRecorded = 64;
  std::erase_if(recorded_, [&](const Recorded& r) { return r.scratch_epoch != scratch_epoch_; });
  auto it = std::find_if(recorded_.begin(), recorded_.end(), [&](const Recorded& r) { return r.batch == batch && r.x == x && r.v_first == v_first; });
  if (it == recorded_.end()) {
    if (recorded_.size() >= kMaxRecorded) recorded_.erase(recorded_.begin());
    step();  // may size scratch buffers: the entry takes the epoch they have after it
    recorded_.push_back({batch, x, v_first, scratch_epoch_, false, nullptr});
    return;
  }
  if (it->rec) {
    if (be_.replay(*it->rec, step)) return;
    it->rec.reset();  // stale (a buffer it uses moved): recorded again next time
    step();
    return;
  }
  if (it->failed) {
    step();
    return;
  }
  it->rec = be_.record(step);  // runs the step either way
  it->failed = it->rec == nullptr;
}

State RwkvModel::new_state() const {
  State s(be_, w_.dims, w_.first_layer, w_.last_layer);
  reset(s);
  return s;
}

void RwkvModel::reset(State& s) const {
  const ModelDims& d = w_.dims;
  const size_t C = size_t(d.n_embd), per = d.state_floats_per_layer();
  std::vector<float> host(s.size(), 0.0f);
  for (int l = s.first_layer(); l < s.last_layer(); ++l) {
    float* base = host.data() + size_t(l - s.first_layer()) * per;
    if (d.arch == Arch::V4) std::fill(base + 3 * C, base + 4 * C, -1e30f);
    if (d.has_time_state && l >= w_.first_layer && l < w_.last_layer) {
      auto streamed = streamed_time_state_.find(l);
      const Vector& ts = streamed != streamed_time_state_.end() ? streamed->second : w_.layers[size_t(l - w_.first_layer)].v("att.time_state");
      std::copy(ts.begin(), ts.end(), base + C);
    }
  }
  s.from_host(host);
}

void RwkvModel::embed(std::span<const int32_t> tokens, float* x) {
  if (!w_.has_embedding) fail("internal: embed() on a stage without the embedding");
  be_.embed(w_, tokens.data(), int(tokens.size()), x);
}

float* RwkvModel::head_logits(const float* x, const std::vector<int>& rows) {
  if (!w_.has_head) fail("internal: head() on a stage without the head");
  const int C = w_.dims.n_embd, V = w_.dims.vocab, n = int(rows.size());
  float* hin = scratch(kHeadIn, size_t(n) * C);
  std::vector<int32_t> idx(rows.begin(), rows.end());
  be_.gather_rows(x, idx.data(), n, C, hin);
  be_.layer_norm(hin, w_.ln_out_w, w_.ln_out_b, hin, n, C);
  float* out = scratch(kLogits, size_t(n) * V);
  be_.linear(w_.head, hin, C, out, V, n);
  return out;
}

void RwkvModel::head(const float* x, const std::vector<int>& rows, float* logits_host) {
  be_.to_host(logits_host, head_logits(x, rows), rows.size() * size_t(w_.dims.vocab));
}

void RwkvModel::head_sample(const float* x, const std::vector<int>& rows, std::span<const SampleRequest> requests, SampledToken* out) {
  if (requests.size() != rows.size()) fail("internal: ", requests.size(), " sampling requests for ", rows.size(), " rows");
  const int V = w_.dims.vocab;
  float* logits = head_logits(x, rows);
  // Rows that want log-probabilities come to the host before sample() applies penalties in place; only
  // those rows travel, so plain requests still return nothing but token ids.
  std::vector<std::pair<size_t, std::vector<float>>> raw;
  for (size_t i = 0; i < requests.size(); ++i)
    if (requests[i].logprobs >= 0) {
      raw.emplace_back(i, std::vector<float>(size_t(V)));
      be_.to_host(raw.back().second.data(), logits + i * size_t(V), size_t(V));
    }
  std::vector<int32_t> tokens(rows.size());
  be_.sample(logits, int(rows.size()), V, requests, tokens.data());
  for (size_t i = 0; i < rows.size(); ++i) out[i] = SampledToken{tokens[i]};
  for (auto& [i, row] : raw) score_logprobs(row.data(), V, requests[i].logprobs, out[i]);
}

void RwkvModel::head_score(const float* x, const std::vector<int>& rows, std::span<const int32_t> targets, std::span<const int> tops,
                           SampledToken* out) {
  if (targets.size() != rows.size() || tops.size() != rows.size()) fail("internal: ", targets.size(), " targets for ", rows.size(), " rows");
  // In blocks, so a long prompt chunk over a large vocabulary never holds all its logits at once.
  constexpr size_t kBlock = 64;
  const size_t V = size_t(w_.dims.vocab);
  std::vector<float> logits;
  for (size_t b = 0; b < rows.size(); b += kBlock) {
    const size_t n = std::min(kBlock, rows.size() - b);
    logits.resize(n * V);
    head(x, std::vector<int>(rows.begin() + long(b), rows.begin() + long(b + n)), logits.data());
    for (size_t i = 0; i < n; ++i) {
      out[b + i] = SampledToken{targets[b + i]};
      score_logprobs(logits.data() + i * V, int(V), tops[b + i], out[b + i]);
    }
  }
}

void RwkvModel::run_layers(float* x, float* v_first, std::span<const StageSequence> batch, int R) {
  std::vector<Seq> seqs;
  int off = 0;
  for (auto& s : batch) {
    if (!s.state || s.state->first_layer() > w_.first_layer || s.state->last_layer() < w_.last_layer)
      fail("internal: state does not cover layers ", w_.first_layer, "..", w_.last_layer - 1);
    seqs.push_back({off, s.n_tokens, s.state});
    off += s.n_tokens;
  }
  if (off != R) fail("internal: batch rows ", off, " != ", R);
  // Decode steps (one token per sequence, every layer resident) on a recording backend replay a graph.
  bool decode = be_.can_record() && w_.streamed.empty() && R == int(seqs.size());
  if (decode) {
    run_recorded(R, x, v_first, [&] {
      for (int l = w_.first_layer; l < w_.last_layer; ++l) run_layer(l, w_.layers[size_t(l - w_.first_layer)], seqs, R, x, v_first);
    });
    return;
  }
  for (int l = w_.first_layer; l < w_.last_layer; ++l) {
    if (auto h = held_.find(l); h != held_.end()) {
      // Streamed from host memory: the next streamed layer (or, after the last, the first one, for the
      // next step) is copied in while this one runs.
      be_.bring_in(h->second);
      auto next = std::next(h) != held_.end() ? std::next(h) : held_.begin();
      if (next != h) be_.prefetch(next->second);
      run_layer(l, h->second, seqs, R, x, v_first);
      be_.let_go(h->second);
    } else if (w_.streamed.count(l)) {
      // Streamed from the file: prepared for this step only, its file pages returned afterwards, so
      // resident memory stays at the kept layers plus one.
      LayerWeights lw = w_.load_streamed_layer(l);
      run_layer(l, lw, seqs, R, x, v_first);
      w_.release_layer_pages(l);
    } else {
      run_layer(l, w_.layers[size_t(l - w_.first_layer)], seqs, R, x, v_first);
    }
  }
}

void RwkvModel::run_layer(int l, const LayerWeights& lw, const std::vector<Seq>& seqs, int R, float* x, float* v_first) {
  time_mix(l, lw, seqs, R, x, v_first);
  channel_mix(l, lw, seqs, R, x);
}

void RwkvModel::time_mix(int l, const LayerWeights& lw, const std::vector<Seq>& seqs, int R, float* x, float* v_first) {
  const ModelDims& d = w_.dims;
  const int C = d.n_embd, H = d.n_head, N = d.head_size;
  const size_t RC = size_t(R) * C;
  float* r = scratch(kR, RC);
  float* k = scratch(kK, RC);
  float* v = scratch(kV, RC);
  float* y = scratch(kY, RC);
  float *xx = nullptr, *sx = nullptr;  // the normalised tokens and their predecessors
  if (d.arch != Arch::V7) {            // v7 norms, shifts and mixes in one op (below)
    xx = scratch(kXX, RC);
    sx = scratch(kSX, RC);
    be_.layer_norm(x, lw.v("ln1.weight"), lw.v("ln1.bias"), xx, R, C);
    be_.token_shift(xx, sx, slices(seqs, l, 0), C);
  }

  // v4/v5: the r, k and v products of the token interpolated with its predecessor, one mix each.
  auto lerp_rkv = [&](ProductOutput r_out) {
    float *xr = scratch(kT0, RC), *xk = scratch(kT2, RC), *xv = scratch(kT3, RC);
    be_.lerp_mix(xx, sx, lw.v("att.time_mix_r"), xr, R, C);
    be_.lerp_mix(xx, sx, lw.v("att.time_mix_k"), xk, R, C);
    be_.lerp_mix(xx, sx, lw.v("att.time_mix_v"), xv, R, C);
    return std::vector<Product>{{&lw.m("att.receptance"), xr, C, r, C, r_out}, {&lw.m("att.key"), xk, C, k, C}, {&lw.m("att.value"), xv, C, v, C}};
  };

  if (d.arch == Arch::V4) {
    be_.linears(lerp_rkv(ProductOutput::activated(UnaryOp::Sigmoid)), R);
    be_.wkv4(slices(seqs, l, C), C, lw.v("att.w"), lw.v("att.time_first"), k, v, y);
    be_.mul(y, r, RC);
  } else if (d.arch == Arch::V5_0 || d.arch == Arch::V5_1 || d.arch == Arch::V5_2) {
    std::vector<Product> products = lerp_rkv({});
    float* g = nullptr;
    if (lw.has_m("att.gate")) {
      g = scratch(kG, RC);
      float* xg = scratch(kT4, RC);
      be_.lerp_mix(xx, sx, lw.v("att.time_mix_g"), xg, R, C);
      products.push_back({&lw.m("att.gate"), xg, C, g, C, ProductOutput::activated(UnaryOp::Silu)});
    }
    be_.linears(products, R);
    const Vector& w = lw.v("att.w");
    be_.wkv5(slices(seqs, l, C), H, N, r, k, v, nullptr, &w, lw.v("att.u"), y);
    be_.group_norm(y, lw.v("att.ln_x.weight"), lw.v("att.ln_x.bias"), R, H, N);
    if (g) be_.mul(y, g, RC);
  } else if (d.arch == Arch::V6) {
    const Matrix& w1 = lw.m("att.maa_w1");
    const int64_t D5 = w1.rows, D = D5 / 5;
    float* xxx = scratch(kT0, RC);
    const DeltaMix x_mix[1] = {{&lw.v("att.time_maa_x"), nullptr, xxx}};
    be_.delta_mix(xx, sx, x_mix, 0, R, C);
    float* lora = scratch(kT1, size_t(R) * D5);
    be_.linear(w1, xxx, C, lora, D5, R, ProductOutput::activated(UnaryOp::Tanh));
    // The five token-dependent mixes, in the official order w, k, v, r, g.
    const char* names[5] = {"att.time_maa_w", "att.time_maa_k", "att.time_maa_v", "att.time_maa_r", "att.time_maa_g"};
    float* mixed[5] = {scratch(kW, RC), scratch(kT2, RC), scratch(kT3, RC), scratch(kT4, RC), scratch(kA, RC)};
    DeltaMix mixes[5];
    std::vector<Product> offsets;
    for (int j = 0; j < 5; ++j) {
      offsets.push_back({&lw.m("att.maa_w2." + std::to_string(j)), lora + j * D, D5, mixed[j], C});
      mixes[j] = {&lw.v(names[j]), mixed[j], mixed[j]};
    }
    be_.linears(offsets, R);
    be_.delta_mix(xx, sx, mixes, C, R, C);
    float* g = scratch(kG, RC);
    const Matrix& dw1 = lw.m("att.decay_w1");
    float* dl = scratch(kT1, size_t(R) * dw1.rows);
    const Product products[] = {{&lw.m("att.receptance"), mixed[3], C, r, C},
                                {&lw.m("att.key"), mixed[1], C, k, C},
                                {&lw.m("att.value"), mixed[2], C, v, C},
                                {&lw.m("att.gate"), mixed[4], C, g, C, ProductOutput::activated(UnaryOp::Silu)},
                                {&dw1, mixed[0], C, dl, dw1.rows, ProductOutput::activated(UnaryOp::Tanh)}};
    be_.linears(products, R);
    float* w = scratch(kKK, RC);
    be_.linear(lw.m("att.decay_w2"), dl, dw1.rows, w, C, R, ProductOutput::activated(UnaryOp::ExpNegExp, lw.v("att.time_decay").data()));
    be_.wkv5(slices(seqs, l, C), H, N, r, k, v, w, nullptr, lw.v("att.u"), y);
    be_.group_norm(y, lw.v("att.ln_x.weight"), lw.v("att.ln_x.bias"), R, H, N);
    be_.mul(y, g, RC);
  } else {  // v7
    // The six mixes of the normalised token with its predecessor, in one pass.
    float *xr = scratch(kT0, RC), *xw = scratch(kT4, RC), *xk = scratch(kT5, RC), *xv = scratch(kT2, RC), *xa = scratch(kT6, RC),
          *xg = scratch(kT7, RC);
    const DeltaMix mixes[6] = {{&lw.v("att.x_r"), nullptr, xr}, {&lw.v("att.x_w"), nullptr, xw}, {&lw.v("att.x_k"), nullptr, xk},
                               {&lw.v("att.x_v"), nullptr, xv}, {&lw.v("att.x_a"), nullptr, xa}, {&lw.v("att.x_g"), nullptr, xg}};
    be_.norm_shift_mix(x, lw.v("ln1.weight"), lw.v("ln1.bias"), slices(seqs, l, 0), mixes, R, C);
    // r, k, v and every LoRA's first factor read only the mixes: one set of products. The LoRAs' second
    // factors (dst = out(lora_2 · act(lora_1 · in)), `out` may add a bias and activate) are the next.
    float *w = scratch(kW, RC), *a = scratch(kA, RC), *g = scratch(kG, RC);
    std::vector<Product> first = {{&lw.m("att.receptance"), xr, C, r, C}, {&lw.m("att.key"), xk, C, k, C}, {&lw.m("att.value"), xv, C, v, C}};
    std::vector<Product> second;
    auto lora = [&](const std::string& n, const float* in, ProductOutput act, float* dst, ProductOutput out, int hidden_slot) {
      const Matrix& f1 = lw.m("att." + n + "1");
      if (f1.rows > C) fail(w_.checkpoint->path(), ": LoRA rank of att.", n, "1 exceeds n_embd");
      float* hidden = scratch(hidden_slot, RC);
      first.push_back({&f1, in, C, hidden, f1.rows, act});
      second.push_back({&lw.m("att." + n + "2"), hidden, f1.rows, dst, C, out});
    };
    lora("w", xw, ProductOutput::activated(UnaryOp::Tanh), w, ProductOutput::activated(UnaryOp::V7Decay, lw.v("att.w0").data()), kT1);
    lora("a", xa, {}, a, ProductOutput::activated(UnaryOp::Sigmoid, lw.v("att.a0").data()), kLoraA);
    lora("g", xg, ProductOutput::activated(UnaryOp::Sigmoid), g, {}, kLoraG);
    float* gate = nullptr;  // the value residual's, every layer but the first
    if (l > 0) {
      gate = scratch(kT3, RC);
      lora("v", xv, {}, gate, {}, kLoraV);
    }
    be_.linears(first, R);
    be_.linears(second, R);
    if (!v_first) fail("internal: v7 layer ", l, " needs v_first");
    const V7Attention in{r, w, a, g, k, v, scratch(kKK, RC), v_first, gate, &lw.v("att.k_k"), &lw.v("att.k_a"), l > 0 ? &lw.v("att.v0") : nullptr,
                         &lw.v("att.ln_x.weight"), &lw.v("att.ln_x.bias"), &lw.v("att.r_k")};
    be_.v7_attention(slices(seqs, l, C), H, N, in, y, R);
  }
  be_.linear(lw.m("att.output"), y, C, x, C, R, ProductOutput::added());  // the residual
}

void RwkvModel::channel_mix(int l, const LayerWeights& lw, const std::vector<Seq>& seqs, int R, float* x) {
  const ModelDims& d = w_.dims;
  const int C = d.n_embd, F = d.dim_ffn;
  const size_t RC = size_t(R) * C;
  const size_t ffn_prev = d.arch == Arch::V4 ? 4 * size_t(C) : size_t(C) + d.state_floats_per_layer() - 2 * size_t(C);
  float* t0 = scratch(kT0, RC);
  float* hidden = scratch(kT1, size_t(R) * F);
  const Vector &ln_w = lw.v("ln2.weight"), &ln_b = lw.v("ln2.bias");
  if (d.arch == Arch::V7) {  // no receptance gate
    const DeltaMix k_mix[1] = {{&lw.v("ffn.x_k"), nullptr, t0}};
    be_.norm_shift_mix(x, ln_w, ln_b, slices(seqs, l, ffn_prev), k_mix, R, C);
    be_.linear(lw.m("ffn.key"), t0, C, hidden, F, R, ProductOutput::activated(UnaryOp::ReluSquare));
    return be_.linear(lw.m("ffn.value"), hidden, F, x, C, R, ProductOutput::added());
  }
  float *xr = scratch(kT2, RC), *r = scratch(kR, RC);
  if (d.arch == Arch::V6) {
    const DeltaMix mixes[2] = {{&lw.v("ffn.time_maa_r"), nullptr, xr}, {&lw.v("ffn.time_maa_k"), nullptr, t0}};
    be_.norm_shift_mix(x, ln_w, ln_b, slices(seqs, l, ffn_prev), mixes, R, C);
  } else {
    float *xx = scratch(kXX, RC), *sx = scratch(kSX, RC);
    be_.layer_norm(x, ln_w, ln_b, xx, R, C);
    be_.token_shift(xx, sx, slices(seqs, l, ffn_prev), C);
    be_.lerp_mix(xx, sx, lw.v("ffn.time_mix_r"), xr, R, C);
    be_.lerp_mix(xx, sx, lw.v("ffn.time_mix_k"), t0, R, C);
  }
  const Product rk[] = {{&lw.m("ffn.receptance"), xr, C, r, C, ProductOutput::activated(UnaryOp::Sigmoid)},
                        {&lw.m("ffn.key"), t0, C, hidden, F, ProductOutput::activated(UnaryOp::ReluSquare)}};
  be_.linears(rk, R);
  float* out = scratch(kOut, RC);
  be_.linear(lw.m("ffn.value"), hidden, F, out, C, R);
  be_.mul(out, r, RC);
  be_.add(x, out, RC);
}

}  // namespace skein
