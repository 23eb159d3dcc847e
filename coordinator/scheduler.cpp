#include "coordinator/scheduler.h"

#include <algorithm>

#include "common/error.h"

namespace skein {

struct Scheduler::Active {
  ScheduledRequest req;
  int session = -1;
  size_t prefilled = 0;        // prompt tokens handed to the model
  int32_t next = -1;           // sampled token waiting to be fed back
  bool awaiting = false;       // a micro-batch that will produce this request's next logits is in flight
  int generated = 0;
  bool done = false;
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

void Scheduler::submit(ScheduledRequest r) {
  if (r.prompt.empty()) fail("the prompt is empty");
  r.sampling.validate(model_.dims().vocab);
  auto a = std::make_unique<Active>();
  a->session = model_.open_session();
  model_.set_sampling(a->session, r.sampling);
  a->req = std::move(r);
  if (a->req.max_tokens <= 0) {
    model_.close_session(a->session);
    if (a->req.on_finish) a->req.on_finish("length");
    return;
  }
  active_.push_back(std::move(a));
}

bool Scheduler::fill() {
  std::vector<ModelHandle::BatchEntry> entries;
  InFlight f{0, {}};
  int tokens = 0;
  for (auto& ap : active_) {
    Active& a = *ap;
    if (a.done || tokens >= budget_) continue;
    if (a.prefilled < a.req.prompt.size()) {
      size_t n = std::min({size_t(chunk_), a.req.prompt.size() - a.prefilled, size_t(budget_ - tokens)});
      bool last = a.prefilled + n == a.req.prompt.size();
      entries.push_back({a.session, std::vector<int32_t>(a.req.prompt.begin() + long(a.prefilled), a.req.prompt.begin() + long(a.prefilled + n)), last});
      a.prefilled += n;
      a.awaiting = last;
      f.entries.push_back({&a, last});
      tokens += int(n);
    } else if (!a.awaiting && a.next >= 0) {
      entries.push_back({a.session, {a.next}, true});
      a.awaiting = true;
      a.next = -1;
      f.entries.push_back({&a, true});
      tokens += 1;
    }
  }
  if (entries.empty()) return false;
  f.id = model_.submit(entries);
  ++steps_;
  in_flight_.push_back(std::move(f));
  return true;
}

void Scheduler::step() {
  while (int(in_flight_.size()) < model_.max_in_flight() && fill()) {
  }
  if (in_flight_.empty()) return;
  InFlight f = std::move(in_flight_.front());
  in_flight_.pop_front();
  complete(f);
  active_.erase(std::remove_if(active_.begin(), active_.end(), [](auto& a) { return a->done; }), active_.end());
}

void Scheduler::complete(InFlight& f) {
  size_t wanted = 0;
  for (auto& [a, w] : f.entries) wanted += w;
  tokens_.resize(wanted);
  model_.collect(f.id, tokens_.data());
  size_t k = 0;
  for (auto& [ap, w] : f.entries) {
    if (!w) continue;
    Active& a = *ap;
    int32_t tok = tokens_[k++];
    a.awaiting = false;
    if (a.done) continue;
    const SamplingParams& p = a.req.sampling;
    if (std::find(p.token_stop.begin(), p.token_stop.end(), tok) != p.token_stop.end()) {
      finish(a, "stop_token");
      continue;
    }
    ++a.generated;
    if (a.req.on_token) a.req.on_token(tok);
    if (a.generated >= a.req.max_tokens) finish(a, "length");
    else a.next = tok;
  }
}

void Scheduler::finish(Active& a, const std::string& reason) {
  if (a.done) return;
  a.done = true;
  model_.close_session(a.session);
  if (a.req.on_finish) a.req.on_finish(reason);
}

void Scheduler::run_until_idle() {
  while (!idle()) step();
}

void Scheduler::cancel_all() {
  while (!in_flight_.empty()) {  // results already on their way must be taken off the wire
    InFlight f = std::move(in_flight_.front());
    in_flight_.pop_front();
    size_t wanted = 0;
    for (auto& [a, w] : f.entries) wanted += w;
    tokens_.resize(wanted);
    model_.collect(f.id, tokens_.data());
  }
  for (auto& a : active_) finish(*a, "cancelled");
  active_.clear();
}

}  // namespace skein
