#include "worker/local_model.h"

#include <algorithm>

#include "common/error.h"
#include "common/process_stats.h"

namespace skein {

SessionState& LocalModel::get(int session) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) fail("no session ", session);
  return it->second;
}

int LocalModel::open_session() {
  if (free_slots() <= 0) fail("all ", max_sessions_, " request slots are in use");
  sessions_.emplace(next_, engine_.new_state());
  return next_++;
}

int LocalModel::clone_session(int session) {
  if (free_slots() <= 0) fail("all ", max_sessions_, " request slots are in use");
  sessions_.emplace(next_, get(session).clone());
  return next_++;
}

int LocalModel::add_start_state(const std::vector<float>& state) {
  start_states_.push_back(engine_.new_state());
  start_states_.back().from_host(state);
  return int(start_states_.size());
}

void LocalModel::restart_session(int session, int start) {
  SessionState& s = get(session);
  if (start < 0 || start > int(start_states_.size())) fail("internal: no start state ", start);
  s = start == 0 ? engine_.new_state() : start_states_[size_t(start - 1)].clone();
}

uint64_t LocalModel::submit(const std::vector<BatchEntry>& entries) {
  // Each sampling entry's request (penalties, its random draw) is prepared here and executed where the
  // logits are: on a GPU last stage only the token ids come back.
  std::vector<int> sampling;
  std::vector<const uint64_t*> allowed;
  const size_t words = (size_t(engine_.dims().vocab) + 63) / 64;
  for (auto& e : entries)
    if (e.sample) {
      if (!e.allowed.empty() && e.allowed.size() != words) fail("internal: an allowed-token mask of ", e.allowed.size(), " words for ", engine_.dims().vocab, " tokens");
      sampling.push_back(e.session);
      allowed.push_back(e.allowed.empty() ? nullptr : e.allowed.data());
    }
  std::vector<SampleRequest> requests = samplers_.prepare(sampling, allowed, engine_.dims().vocab);
  size_t scored = 0;
  for (auto& e : entries) scored += e.score_targets.size();
  std::vector<SampledToken> tokens(requests.size() + scored);  // samples, then scored positions
  std::vector<EngineSequence> batch;
  size_t row = 0, score = requests.size();
  for (auto& e : entries) {
    EngineSequence q{e.tokens, &get(e.session), nullptr, false};
    if (e.sample) {
      q.sample = &requests[row];
      q.token = &tokens[row];
      ++row;
    }
    q.score_targets = e.score_targets;
    q.score_top = e.score_top;
    q.scores = tokens.data() + score;
    score += e.score_targets.size();
    batch.push_back(q);
  }
  auto t0 = std::chrono::steady_clock::now();
  engine_.forward(batch);
  samplers_.record(sampling, tokens);  // the samples (the scored positions after them are not drawn)
  busy_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  results_[++step_] = std::move(tokens);
  return step_;
}

uint64_t LocalModel::submit_logits(const std::vector<LogitsEntry>& entries) {
  const size_t V = size_t(engine_.dims().vocab);
  size_t rows = 0;
  for (auto& e : entries) rows += e.logits ? e.tokens.size() : 0;
  std::vector<float> out(rows * V);
  std::vector<EngineSequence> batch;
  size_t row = 0;
  for (auto& e : entries) {
    batch.push_back({e.tokens, &get(e.session), e.logits ? out.data() + row * V : nullptr, e.logits});
    row += e.logits ? e.tokens.size() : 0;
  }
  auto t0 = std::chrono::steady_clock::now();
  engine_.forward(batch);
  busy_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rows) logits_[++step_] = std::move(out);
  else ++step_;
  return step_;
}

void LocalModel::collect_logits(uint64_t step, float* logits) {
  auto it = logits_.find(step);
  if (it == logits_.end()) return;  // a step without logits
  std::copy(it->second.begin(), it->second.end(), logits);
  logits_.erase(it);
}

std::vector<ModelHandle::StageLoad> LocalModel::stage_load() {
  auto now = std::chrono::steady_clock::now();
  double wall = std::chrono::duration<double>(now - since_).count();
  double busy = wall > 0 ? std::min(1.0, busy_seconds_ / wall) : 0.0;
  busy_seconds_ = 0;
  since_ = now;
  return {{busy, resident_bytes()}};
}

void LocalModel::collect(uint64_t step, SampledToken* tokens) {
  auto it = results_.find(step);
  if (it == results_.end()) fail("internal: no result for step ", step);
  std::move(it->second.begin(), it->second.end(), tokens);
  results_.erase(it);
}

void LocalModel::run(int session, std::span<const int32_t> tokens, int chunk, float* logits, bool all_positions) {
  SessionState& s = get(session);
  const size_t V = size_t(engine_.dims().vocab);
  const size_t step = size_t(std::max(1, chunk));
  for (size_t i = 0; i < tokens.size(); i += step) {
    size_t n = std::min(step, tokens.size() - i);
    engine_.forward(tokens.subspan(i, n), s, all_positions ? logits + i * V : logits, all_positions);
  }
}

}  // namespace skein
