#include "coordinator/scheduler.h"

#include <algorithm>

#include "common/error.h"

namespace skein {

struct Scheduler::Active {
  ScheduledRequest req;
  uint64_t handle = 0;
  bool started = false;
  int session = -1;
  size_t prefilled = 0;        // prompt tokens handed to the model
  int32_t next = -1;           // sampled token waiting to be fed back
  bool awaiting = false;       // a micro-batch that will produce this request's next logits is in flight
  int generated = 0;
  size_t next_snapshot = 0;    // req.snapshots[next_snapshot] is the next to call
  bool done = false;
  bool owned = true;           // the scheduler opened the slot (else the caller keeps it)
  std::vector<int32_t> drawn;  // every token drawn (the sampler's history, should it be parked)
  Parked parked;               // set: leaves as soon as nothing of it is in flight, not ended
};

Scheduler::Scheduler(ModelHandle& model, int micro_batch_tokens, int prefill_chunk, const std::vector<uint8_t>& penalty_free)
    : model_(model), budget_(std::max(1, micro_batch_tokens)), chunk_(std::max(1, prefill_chunk)) {
  model_.set_penalty_free(penalty_free);
}

Scheduler::~Scheduler() {
  try {
    cancel_all();
  } catch (...) {
  }
}

uint64_t Scheduler::submit(ScheduledRequest r) {
  if (r.prompt.empty()) fail("the prompt is empty");
  for (int32_t t : r.prompt)
    if (t < 0 || t >= model_.dims().vocab) fail("token id ", t, " is out of range for vocabulary size ", model_.dims().vocab);
  r.sampling.validate(model_.dims().vocab);
  // Points inside the prompt, in prompt order.
  std::erase_if(r.snapshots, [&](const ScheduledRequest::Snapshot& s) { return s.at == 0 || s.at >= r.prompt.size(); });
  std::stable_sort(r.snapshots.begin(), r.snapshots.end(), [](auto& a, auto& b) { return a.at < b.at; });
  auto a = std::make_unique<Active>();
  a->handle = next_handle_++;
  a->owned = r.slot < 0;
  a->session = a->owned ? model_.open_session() : r.slot;
  model_.set_sampling(a->session, r.sampling);
  a->req = std::move(r);
  uint64_t handle = a->handle;
  if (a->req.max_tokens <= 0 && a->req.score_prompt < 0) {
    if (a->owned) model_.close_session(a->session);
    if (a->req.on_finish) a->req.on_finish("length");
    if (a->req.on_release) a->req.on_release(a->req.prompt);
    return handle;
  }
  active_.push_back(std::move(a));
  return handle;
}

Scheduler::Active* Scheduler::running(uint64_t handle) {
  for (auto& a : active_)
    if (a->handle == handle && !a->done) return a.get();
  return nullptr;
}

void Scheduler::cancel(uint64_t handle, const std::string& reason) {
  if (Active* a = running(handle)) {
    // Entries already in flight still come back; they are taken and ignored (done is set).
    a->done = true;
    if (a->req.on_finish) a->req.on_finish(reason);
  }
}

void Scheduler::park(uint64_t handle, Parked parked) {
  if (Active* a = running(handle)) a->parked = std::move(parked);
}

bool Scheduler::fill() {
  std::vector<ModelHandle::BatchEntry> entries;
  std::vector<std::pair<Active*, size_t>> snapshots;  // request, snapshot index
  InFlight f{0, {}};
  int tokens = 0;
  for (auto& ap : active_) {
    Active& a = *ap;
    if (a.done || a.parked || tokens >= budget_) continue;
    if (!a.started) {
      a.started = true;
      if (a.req.on_start) a.req.on_start();
    }
    if (a.prefilled < a.req.prompt.size()) {
      size_t n = std::min({size_t(chunk_), a.req.prompt.size() - a.prefilled, size_t(budget_ - tokens)});
      const auto& snaps = a.req.snapshots;
      if (a.next_snapshot < snaps.size()) n = std::min(n, snaps[a.next_snapshot].at - a.prefilled);  // a chunk ends at the next point
      const bool last = a.prefilled + n == a.req.prompt.size(), sample = last && a.req.max_tokens > 0;
      const auto begin = a.req.prompt.begin() + long(a.prefilled);
      ModelHandle::BatchEntry e{a.session, std::vector<int32_t>(begin, begin + long(n)), sample};
      if (sample && a.req.constraint) e.allowed = a.req.constraint->allowed();
      if (a.req.score_prompt >= 0) {  // each position against the prompt token after it
        e.score_targets.assign(begin + 1, begin + long(n) + (last ? 0 : 1));
        e.score_top = a.req.score_prompt;
      }
      const size_t scored = e.score_targets.size();
      entries.push_back(std::move(e));
      a.prefilled += n;
      while (a.next_snapshot < snaps.size() && snaps[a.next_snapshot].at == a.prefilled) snapshots.push_back({&a, a.next_snapshot++});
      a.awaiting = last;
      f.entries.push_back({&a, sample, scored, last});
      tokens += int(n);
    } else if (!a.awaiting && a.next >= 0) {
      entries.push_back({a.session, {a.next}, true});
      if (a.req.constraint) entries.back().allowed = a.req.constraint->allowed();
      a.awaiting = true;
      a.next = -1;
      f.entries.push_back({&a, true, 0, false});
      tokens += 1;
    }
  }
  if (entries.empty()) return false;
  f.id = model_.submit(entries);
  ++steps_;
  in_flight_.push_back(std::move(f));
  for (auto [a, k] : snapshots)
    if (a->req.snapshots[k].call) a->req.snapshots[k].call(a->session);
  return true;
}

void Scheduler::step() {
  while (int(in_flight_.size()) < model_.max_in_flight() && fill()) {
  }
  if (in_flight_.empty()) {
    reap();
    return;
  }
  InFlight f = std::move(in_flight_.front());
  in_flight_.pop_front();
  complete(f);
  reap();
}

void Scheduler::reap() {
  // A finished or parked request leaves once no micro-batch in flight refers to it. Its callbacks run
  // after active_ is settled: a parked request's taker may submit its rest at once.
  auto referenced = [&](Active* a) {
    for (auto& f : in_flight_)
      for (auto& e : f.entries)
        if (e.request == a) return true;
    return false;
  };
  std::vector<std::unique_ptr<Active>> leaving;
  for (auto it = active_.begin(); it != active_.end();) {
    if (((*it)->done || (*it)->parked) && !referenced(it->get())) {
      leaving.push_back(std::move(*it));
      it = active_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& a : leaving) {
    if (a->done) release(*a);
    else hand_over(*a);
  }
}

void Scheduler::take_tokens(const InFlight& f) {
  size_t wanted = 0;
  for (auto& e : f.entries) wanted += e.sample + e.scored;
  tokens_.resize(wanted);
  model_.collect(f.id, tokens_.data());
}

void Scheduler::complete(InFlight& f) {
  take_tokens(f);
  // Scored prompt positions come after the samples; a prompt's scores go out before its first token.
  size_t scores = 0;
  for (auto& e : f.entries) scores += e.sample;
  for (auto& e : f.entries) {
    Active& a = *e.request;
    const auto first = tokens_.begin() + long(scores);
    scores += e.scored;
    if (!a.done && e.scored && a.req.on_prompt_scores) a.req.on_prompt_scores(std::vector<SampledToken>(first, first + long(e.scored)));
    if (e.ends_prompt && !e.sample) {  // scored only (max_tokens 0)
      a.awaiting = false;
      finish(a, "length");
    }
  }
  size_t k = 0;
  for (auto& e : f.entries) {
    if (!e.sample) continue;
    Active& a = *e.request;
    const SampledToken& sampled = tokens_[k++];
    const int32_t tok = sampled.token;
    a.awaiting = false;
    if (a.done) continue;
    const SamplingParams& p = a.req.sampling;
    if (std::find(p.token_stop.begin(), p.token_stop.end(), tok) != p.token_stop.end()) {
      finish(a, "stop_token");
      continue;
    }
    if (a.req.constraint && !a.req.constraint->accept(tok)) {
      finish(a, "format_violation");
      continue;
    }
    ++a.generated;
    a.drawn.push_back(tok);
    a.next = tok;  // fed with the next step (if the request goes on)
    if (a.req.on_token) a.req.on_token(sampled);
    if (a.req.constraint && a.req.constraint->complete()) finish(a, "format_complete");
    else if (a.generated >= a.req.max_tokens) finish(a, "length");
  }
}

void Scheduler::finish(Active& a, const std::string& reason) {
  if (a.done) return;
  a.done = true;
  if (a.req.on_finish) a.req.on_finish(reason);
}

void Scheduler::release(Active& a) {
  if (a.owned) return model_.close_session(a.session);
  std::vector<int32_t> unfed(a.req.prompt.begin() + long(a.prefilled), a.req.prompt.end());
  if (a.next >= 0) unfed.push_back(a.next);
  if (a.req.on_release) a.req.on_release(std::move(unfed));
}

void Scheduler::hand_over(Active& a) {
  ScheduledRequest rest = std::move(a.req);
  rest.prompt.erase(rest.prompt.begin(), rest.prompt.begin() + long(a.prefilled));
  if (a.next >= 0) rest.prompt.push_back(a.next);
  rest.max_tokens -= a.generated;
  rest.sampling.drawn.insert(rest.sampling.drawn.end(), a.drawn.begin(), a.drawn.end());
  rest.snapshots.erase(rest.snapshots.begin(), rest.snapshots.begin() + long(a.next_snapshot));
  for (auto& snap : rest.snapshots) snap.at -= a.prefilled;
  rest.on_start = nullptr;  // it started already
  rest.slot = -1;
  a.parked(std::move(rest), a.session);
}

void Scheduler::run_until_idle() {
  while (!idle()) step();
}

// Finished requests count until reaped: reaping releases their slots, so a step must still come.
bool Scheduler::idle() const { return active_.empty() && in_flight_.empty(); }

void Scheduler::cancel_all() {
  while (!in_flight_.empty()) {  // results already on their way must be taken off the wire
    InFlight f = std::move(in_flight_.front());
    in_flight_.pop_front();
    take_tokens(f);
  }
  for (auto& a : active_) {
    finish(*a, "cancelled");
    release(*a);
  }
  active_.clear();
}

}  // namespace skein
