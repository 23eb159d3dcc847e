#include "coordinator/cluster_client.h"

#include <algorithm>
#include <chrono>

#include "common/error.h"
#include "net/stage_protocol.h"

namespace skein {

ClusterClient::ClusterClient(MpiWorld& world, const ModelDims& dims, std::vector<int> stage_ranks, std::vector<size_t> state_floats,
                             int max_slots)
    : world_(world), dims_(dims), ranks_(std::move(stage_ranks)), state_floats_(std::move(state_floats)), max_slots_(max_slots) {}

ClusterClient::~ClusterClient() {
  try {
    shutdown();
  } catch (...) {
  }
}

void ClusterClient::shutdown() {
  if (down_) return;
  down_ = true;
  ControlMessage m;
  m.op = StageOp::Shutdown;
  broadcast(m);
}

void ClusterClient::broadcast(const ControlMessage& m) {
  std::string bytes = m.encode();
  for (int r : ranks_) world_.send(r, kTagControl, bytes);
}

int ClusterClient::take_slot() {
  for (int s = 0; s < max_slots_; ++s)
    if (!used_.count(s)) {
      used_.insert(s);
      return s;
    }
  fail("all ", max_slots_, " request slots are in use");
}

int ClusterClient::open_session() {
  int s = take_slot();
  ControlMessage m;
  m.op = StageOp::ResetSlot;
  m.slot = s;
  broadcast(m);
  return s;
}

void ClusterClient::close_session(int session) {
  if (!used_.erase(session)) return;
  ControlMessage m;
  m.op = StageOp::FreeSlot;
  m.slot = session;
  broadcast(m);
}

int ClusterClient::add_start_state(const std::vector<float>& state) {
  send_shards(StageOp::AddStartState, -1, state);
  return ++start_states_;
}

void ClusterClient::restart_session(int session, int start) {
  if (!used_.count(session)) fail("slot ", session, " is not open");
  if (start < 0 || start > start_states_) fail("internal: no start state ", start);
  ControlMessage m;
  m.op = StageOp::ResetSlot;
  m.slot = session;
  m.slot2 = start;
  broadcast(m);
}

int ClusterClient::clone_session(int session) {
  if (!used_.count(session)) fail("slot ", session, " is not open");
  int s = take_slot();
  ControlMessage m;
  m.op = StageOp::CloneSlot;
  m.slot = session;
  m.slot2 = s;
  broadcast(m);
  return s;
}

void ClusterClient::run(int session, std::span<const int32_t> tokens, int chunk, float* logits, bool all_positions) {
  const size_t V = size_t(dims_.vocab), step = size_t(std::max(1, chunk));
  // Every chunk's plan goes out at once: stage k works on chunk i while stage k+1 works on chunk i-1.
  std::vector<std::pair<uint64_t, size_t>> results;  // step, first logits row
  size_t row = 0;
  for (size_t i = 0; i < tokens.size(); i += step) {
    size_t n = std::min(step, tokens.size() - i);
    bool last_chunk = i + n == tokens.size();
    Want want = !logits ? Want::None : all_positions ? Want::All : last_chunk ? Want::Last : Want::None;
    uint64_t id = submit_step({{session, std::vector<int32_t>(tokens.begin() + long(i), tokens.begin() + long(i + n)), want}});
    if (want != Want::None) {
      results.push_back({id, row});
      row += want == Want::All ? n : 1;
    }
  }
  for (auto [id, first] : results) collect(id, logits + first * V);
}

size_t ClusterClient::rows_wanted(const std::vector<Entry>& entries) const {
  size_t rows = 0;
  for (auto& e : entries) rows += e.want == Want::All ? e.tokens.size() : e.want == Want::Last ? 1 : 0;
  return rows;
}

void ClusterClient::set_sampling(int session, const SamplingParams& params) {
  ControlMessage m;
  m.op = StageOp::SetSampling;
  m.slot = session;
  m.blob = encode_sampling(params);
  world_.send(ranks_.back(), kTagControl, m.encode());
}

void ClusterClient::set_penalty_free(const std::vector<uint8_t>& penalty_free) {
  ControlMessage m;
  m.op = StageOp::SetPenaltyFree;
  m.blob.assign(penalty_free.begin(), penalty_free.end());
  world_.send(ranks_.back(), kTagControl, m.encode());
}

uint64_t ClusterClient::submit(const std::vector<BatchEntry>& entries) {
  std::vector<Entry> e;
  for (auto& b : entries) e.push_back({b.session, b.tokens, b.sample ? Want::Sample : Want::None, b.score_targets, b.score_top, b.allowed});
  return submit_step(e);
}

uint64_t ClusterClient::submit_logits(const std::vector<LogitsEntry>& entries) {
  std::vector<Entry> e;
  for (auto& b : entries) e.push_back({b.session, b.tokens, b.logits ? Want::All : Want::None});
  return submit_step(e);
}

void ClusterClient::collect(uint64_t step, SampledToken* tokens) {
  auto it = pending_.find(step);
  if (it == pending_.end()) return;
  if (it != pending_.begin()) fail("internal: collect() out of submission order");
  if (it->second.logit_rows) fail("internal: step ", step, " wants logits, not tokens");
  std::vector<SampledToken> rows = decode_sampled(world_.recv(ranks_.back(), kTagResult), it->second.samples);
  std::move(rows.begin(), rows.end(), tokens);
  pending_.erase(it);
}

uint64_t ClusterClient::submit_step(const std::vector<Entry>& entries) {
  ControlMessage m;
  m.op = StageOp::Step;
  m.step = ++step_;
  size_t results = 0;  // sampled tokens and scored positions
  const size_t words = (size_t(dims_.vocab) + 63) / 64;
  std::vector<uint64_t> allowed;  // for the last stage only
  for (auto& e : entries) {
    if (!used_.count(e.session)) fail("no session ", e.session);
    const bool constrained = e.want == Want::Sample && !e.allowed.empty();
    if (constrained && e.allowed.size() != words) fail("internal: an allowed-token mask of ", e.allowed.size(), " words for ", dims_.vocab, " tokens");
    m.entries.push_back({e.session, int32_t(e.tokens.size()), e.want, int32_t(e.score_targets.size()), e.score_top, constrained});
    m.targets.insert(m.targets.end(), e.score_targets.begin(), e.score_targets.end());
    if (constrained) allowed.insert(allowed.end(), e.allowed.begin(), e.allowed.end());
    results += (e.want == Want::Sample) + e.score_targets.size();
  }
  // The first stage gets the tokens, the last the masks (one stage: both); the ones between neither.
  const std::string middle = ranks_.size() > 2 ? m.encode() : "";
  for (auto& e : entries) m.tokens.insert(m.tokens.end(), e.tokens.begin(), e.tokens.end());
  if (ranks_.size() == 1) m.allowed = std::move(allowed);
  world_.send(ranks_.front(), kTagControl, m.encode());
  if (ranks_.size() > 1) {
    m.tokens.clear();
    m.allowed = std::move(allowed);
    for (size_t k = 1; k + 1 < ranks_.size(); ++k) world_.send(ranks_[k], kTagControl, middle);
    world_.send(ranks_.back(), kTagControl, m.encode());
  }
  Pending p{rows_wanted(entries), results};
  if (p.logit_rows || p.samples) pending_[m.step] = p;
  return m.step;
}

void ClusterClient::collect(uint64_t step, float* logits) {
  auto it = pending_.find(step);
  if (it == pending_.end()) return;
  if (it != pending_.begin()) fail("internal: collect() out of submission order");
  if (it->second.samples) fail("internal: step ", step, " samples tokens, not logits");
  world_.recv_into(ranks_.back(), kTagResult, logits, it->second.logit_rows * size_t(dims_.vocab) * sizeof(float));
  pending_.erase(it);
}

std::vector<StageStats> ClusterClient::stage_stats() {
  ControlMessage m;
  m.op = StageOp::Stats;
  broadcast(m);
  std::vector<StageStats> out(ranks_.size());
  for (size_t k = 0; k < ranks_.size(); ++k) world_.recv_into(ranks_[k], kTagReply, &out[k], sizeof(StageStats));
  return out;
}

std::vector<ModelHandle::StageLoad> ClusterClient::stage_load() {
  std::vector<StageLoad> out;
  for (auto& s : stage_stats()) out.push_back({s.wall_seconds > 0 ? s.busy_seconds / s.wall_seconds : 0.0, s.resident_bytes});
  return out;
}

double ClusterClient::echo_seconds(size_t k, size_t bytes) {
  ControlMessage m;
  m.op = StageOp::Echo;
  world_.send(ranks_[k], kTagControl, m.encode());
  std::string payload(bytes, 'x');
  auto t0 = std::chrono::steady_clock::now();
  world_.send(ranks_[k], kTagActivations, payload);
  std::string back = world_.recv(ranks_[k], kTagActivations);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

HopResult ClusterClient::hop_round_trip(size_t k, size_t floats, int reps) {
  if (k + 1 >= ranks_.size()) fail("hop probe: stage ", k, " has no next stage");
  ControlMessage m;
  m.op = StageOp::HopProbe;
  m.slot = int32_t(floats);
  m.slot2 = reps;
  m.blob = "in";
  world_.send(ranks_[k + 1], kTagControl, m.encode());
  m.blob = "out";
  world_.send(ranks_[k], kTagControl, m.encode());
  HopResult r;
  world_.recv_into(ranks_[k], kTagReply, &r, sizeof r);
  return r;
}

std::vector<float> ClusterClient::export_state(int session) {
  ControlMessage m;
  m.op = StageOp::ExportSlot;
  m.slot = session;
  broadcast(m);
  std::vector<float> all;
  for (size_t k = 0; k < ranks_.size(); ++k) {
    std::vector<float> part(state_floats_[k]);
    world_.recv_into(ranks_[k], kTagReply, part.data(), part.size() * sizeof(float));
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

void ClusterClient::import_state(int session, const std::vector<float>& state) { send_shards(StageOp::ImportSlot, session, state); }

void ClusterClient::send_shards(StageOp op, int slot, const std::vector<float>& state) {
  size_t total = 0;
  for (size_t n : state_floats_) total += n;
  if (state.size() != total) fail("state has ", state.size(), " values, expected ", total);
  size_t off = 0;
  for (size_t k = 0; k < ranks_.size(); ++k) {
    ControlMessage m;
    m.op = op;
    m.slot = slot;
    m.state.assign(state.begin() + long(off), state.begin() + long(off + state_floats_[k]));
    off += state_floats_[k];
    world_.send(ranks_[k], kTagControl, m.encode());
  }
}

}  // namespace skein
