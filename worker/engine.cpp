#include "worker/engine.h"

#include <algorithm>

#include "common/error.h"
#include "worker/backend_factory.h"

namespace skein {

size_t SessionState::size() const {
  size_t n = 0;
  for (auto& s : shards) n += s.size();
  return n;
}

std::vector<float> SessionState::to_host() const {
  std::vector<float> out;
  out.reserve(size());
  for (auto& s : shards) {
    auto h = s.to_host();
    out.insert(out.end(), h.begin(), h.end());
  }
  return out;
}

void SessionState::from_host(const std::vector<float>& v) {
  if (v.size() != size()) fail("state has ", v.size(), " values, expected ", size());
  size_t off = 0;
  for (auto& s : shards) {
    s.from_host(std::vector<float>(v.begin() + long(off), v.begin() + long(off + s.size())));
    off += s.size();
  }
}

SessionState SessionState::clone() const {
  SessionState c;
  for (auto& s : shards) c.shards.push_back(s.clone());
  return c;
}

std::vector<StageSpec> Engine::whole_model(const ModelDims& dims, const WeightFormat& format) {
  return {StageSpec{0, dims.n_layer, true, true, format, {}}};
}

Engine::Engine(std::shared_ptr<const Checkpoint> ck, const ModelDims& dims, const std::vector<StageSpec>& stages, Backend& backend)
    : dims_(dims), be_(backend) {
  if (stages.empty() || !stages.front().embedding || !stages.back().head) fail("internal: stages must start with the embedding and end with the head");
  int next = 0;
  for (auto& s : stages) {
    if (s.first_layer != next) fail("internal: stage layers are not contiguous");
    next = s.last_layer;
    Backend* be = &backend;
    if (s.cuda_device >= 0) {
      auto& g = gpus_[s.cuda_device];
      if (!g) g = make_backend(s.cuda_device);
      be = g.get();
    }
    stages_.push_back(std::make_unique<RwkvModel>(load_weights(ck, dims, s.first_layer, s.last_layer, s.embedding, s.head, s.format, s.streamed), *be));
  }
  if (next != dims.n_layer) fail("internal: stages do not cover every layer");
}

Engine::Activations& Engine::activations(Backend& be, size_t floats) {
  Activations& a = acts_[&be];
  if (a.x.size() < floats) a.x = DeviceBuffer(be, floats);
  if (dims_.arch == Arch::V7 && a.v_first.size() < floats) a.v_first = DeviceBuffer(be, floats);
  return a;
}

size_t Engine::stage_sum(size_t (ModelWeights::*bytes)() const) const {
  size_t n = 0;
  for (auto& s : stages_) n += (s->weights().*bytes)();
  return n;
}
size_t Engine::matrix_bytes() const { return stage_sum(&ModelWeights::matrix_bytes); }
size_t Engine::resident_bytes() const { return stage_sum(&ModelWeights::resident_bytes); }
size_t Engine::streamed_bytes() const { return stage_sum(&ModelWeights::streamed_bytes); }

SessionState Engine::new_state() const {
  SessionState s;
  for (auto& st : stages_) s.shards.push_back(st->new_state());
  return s;
}

void Engine::reset(SessionState& s) const {
  for (size_t i = 0; i < stages_.size(); ++i) stages_[i]->reset(s.shards[i]);
}

void Engine::forward(std::span<const int32_t> tokens, SessionState& state, float* logits, bool all_positions) {
  EngineSequence c{tokens, &state, logits, all_positions};
  forward(std::span<const EngineSequence>(&c, 1));
}

void Engine::forward(std::span<const EngineSequence> batch) {
  const int C = dims_.n_embd;
  std::vector<int32_t> tokens;
  for (auto& s : batch) {
    if (!s.state || s.state->shards.size() != stages_.size()) fail("internal: session state does not match the engine's stages");
    for (int32_t t : s.tokens)
      if (t < 0 || t >= dims_.vocab) fail("token id ", t, " is out of range for vocabulary size ", dims_.vocab);
    for (int32_t t : s.score_targets)
      if (t < 0 || t >= dims_.vocab) fail("token id ", t, " is out of range for vocabulary size ", dims_.vocab);
    tokens.insert(tokens.end(), s.tokens.begin(), s.tokens.end());
  }
  const int R = int(tokens.size());
  if (R == 0) return;
  const size_t RC = size_t(R) * C;
  const bool v7 = dims_.arch == Arch::V7;
  Backend* at = &stages_.front()->backend();
  Activations* a = &activations(*at, RC);
  stages_.front()->embed(tokens, a->x.get());
  std::vector<StageSequence> seqs(batch.size());
  std::vector<float> host;
  for (size_t k = 0; k < stages_.size(); ++k) {
    Backend& next = stages_[k]->backend();
    if (&next != at) {  // e.g. cpu -> cuda:0: the activations (and v7's v_first) move through the host
      host.resize(v7 ? 2 * RC : RC);
      at->to_host(host.data(), a->x.get(), RC);
      if (v7) at->to_host(host.data() + RC, a->v_first.get(), RC);
      a = &activations(next, RC);
      next.to_device(a->x.get(), host.data(), RC);
      if (v7) next.to_device(a->v_first.get(), host.data() + RC, RC);
      at = &next;
    }
    for (size_t i = 0; i < batch.size(); ++i) seqs[i] = {int(batch[i].tokens.size()), &batch[i].state->shards[k]};
    stages_[k]->run_layers(a->x.get(), a->v_first.get(), seqs, R);
  }

  // Only rows whose logits, tokens or scores are wanted go through ln_out + head (the head is the largest matrix).
  std::vector<int> rows, sample_rows, score_rows, tops;
  std::vector<SampleRequest> requests;
  std::vector<int32_t> targets;  // the scored rows' next tokens
  int off = 0;
  for (auto& s : batch) {
    int n = int(s.tokens.size());
    if (s.score_targets.size() > s.tokens.size()) fail("internal: ", s.score_targets.size(), " targets for ", n, " tokens");
    for (size_t t = 0; t < s.score_targets.size(); ++t) {
      score_rows.push_back(off + int(t));
      tops.push_back(s.score_top);
    }
    targets.insert(targets.end(), s.score_targets.begin(), s.score_targets.end());
    if (n > 0 && s.sample) {
      sample_rows.push_back(off + n - 1);
      requests.push_back(*s.sample);
    } else if (s.logits && n > 0) {
      if (s.all_positions)
        for (int t = 0; t < n; ++t) rows.push_back(off + t);
      else
        rows.push_back(off + n - 1);
    }
    off += n;
  }
  if (!sample_rows.empty()) {
    std::vector<SampledToken> tokens(sample_rows.size());
    stages_.back()->head_sample(a->x.get(), sample_rows, requests, tokens.data());
    size_t k = 0;
    for (auto& s : batch)
      if (s.sample && !s.tokens.empty()) *s.token = std::move(tokens[k++]);
  }
  if (!score_rows.empty()) {
    std::vector<SampledToken> scores(score_rows.size());
    stages_.back()->head_score(a->x.get(), score_rows, targets, tops, scores.data());
    size_t k = 0;
    for (auto& s : batch)
      for (size_t t = 0; t < s.score_targets.size(); ++t) s.scores[t] = std::move(scores[k++]);
  }
  if (rows.empty()) return;
  const size_t V = size_t(dims_.vocab);
  std::vector<float> logits(rows.size() * V);
  stages_.back()->head(a->x.get(), rows, logits.data());
  size_t k = 0;
  for (auto& s : batch) {
    if (s.sample || !s.logits || s.tokens.empty()) continue;
    size_t n = s.all_positions ? s.tokens.size() : 1;
    std::copy(logits.begin() + long(k * V), logits.begin() + long((k + n) * V), s.logits);
    k += n;
  }
}

}  // namespace skein
