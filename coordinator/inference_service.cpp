#include "coordinator/inference_service.h"

#include <chrono>
#include <set>

#include "common/error.h"
#include "common/log.h"
#include "coordinator/generator.h"
#include "coordinator/scheduler.h"

namespace skein {

using Clock = std::chrono::steady_clock;

namespace {
double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
std::string ms_text(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f ms", v);
  return b;
}
int64_t now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }

// A request that never started ends with `s`, and so do the siblings that waited on it.
void end_unstarted(std::vector<ServiceRequest>& siblings, const GenerationSummary& s) {
  for (auto& sib : siblings)
    if (sib.on_done) sib.on_done(s);
}
void end_unstarted(ServiceRequest& r, const GenerationSummary& s) {
  if (r.on_done) r.on_done(s);
  end_unstarted(r.siblings, s);
}
GenerationSummary cancelled(const ServiceRequest& r) {
  GenerationSummary s;
  s.finish_reason = "cancelled";
  s.prompt_tokens = int(r.prompt.size());
  return s;
}
}  // namespace

struct InferenceService::Live {
  ServiceRequest req;
  uint64_t handle = 0;
  Utf8Stream utf8;
  StopMatcher stops{{}};
  std::vector<SampledToken> pending_tokens;  // tokens whose text has not been sent yet
  GenerationSummary summary;
  Clock::time_point submitted, started, first_token, last_token;
  bool have_first = false, finished = false;
  uint64_t session_before = 0;  // the session's history before this request's prompt
  uint64_t start_order = 0;     // the later it started, the sooner it is preempted
  bool parking = false;         // asked to park; still in the scheduler
  bool parked = false;          // in parked_
  std::vector<ServiceRequest> siblings;  // a leader's, until its prompt's state can be copied for them

  // New text and the tokens it came from, to the summary and the client.
  void deliver(const std::string& text) {
    summary.text += text;
    for (const SampledToken& t : pending_tokens)
      if (t.scored) summary.logprobs.push_back(t);
    if (req.on_delta) req.on_delta(text, pending_tokens);
    pending_tokens.clear();
  }
};

ServiceRequest samples_of(const ServiceRequest& base, int n, const std::function<void(ServiceRequest&, int)>& attach) {
  auto sample = [&](int i) {
    ServiceRequest r = base;
    r.sampling.seed += uint64_t(i);
    attach(r, i);
    return r;
  };
  ServiceRequest first = sample(0);
  for (int i = 1; i < n; ++i) first.siblings.push_back(sample(i));
  return first;
}

InferenceService::InferenceService(ModelHandle& model, const Tokenizer& tok, ServiceOptions opts)
    : model_(model), tok_(tok), opts_(std::move(opts)), queue_limit_(size_t(std::max(1, opts_.queue_limit))),
      cache_(size_t(opts_.cache.prefix_bytes), opts_.cache.block_tokens) {
  sessions_ = std::make_unique<SessionStore>(model_, opts_.sessions, opts_.state_header);
  // Kept where the sessions' states are, from then on started from by number; the service keeps names only.
  for (auto& [name, state] : opts_.tuned_states) {
    if (name.empty() || state.size() != model_.dims().state_floats())
      fail("internal: tuned state '", name, "' has ", state.size(), " floats; the model's state has ", model_.dims().state_floats());
    tuned_numbers_[name] = model_.add_start_state(state);
  }
  opts_.tuned_states.clear();
  progress_ns_ = now_ns();
}

std::string InferenceService::tuned_state_for(const std::string& model) const {
  if (tuned_numbers_.count(model)) return model;
  if (model.empty() || model == opts_.model_name || tuned_numbers_.empty()) return "";
  std::string served;
  for (const std::string& name : model_names()) served += (served.empty() ? "'" : ", '") + name + "'";
  fail("model '", model.substr(0, 100), "' is not served here (served: ", served, ")");
}

std::vector<std::string> InferenceService::model_names() const {
  std::vector<std::string> names = {opts_.model_name};
  for (auto& [name, number] : tuned_numbers_) names.push_back(name);
  return names;
}

InferenceService::~InferenceService() { stop(); }

uint64_t InferenceService::submit(ServiceRequest r) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) fail("shutting down: not accepting requests");
  if (!broken_.empty()) fail("the model failed: ", broken_);
  size_t queued = incoming_.size() + waiting_count_;
  if (queued + r.siblings.size() >= queue_limit_) fail("overloaded: ", queued, " requests are already queued");
  uint64_t id = next_id_++;
  incoming_.emplace_back(id, std::move(r));
  wake_.notify_one();
  return id;
}

void InferenceService::cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  cancels_.push_back(id);
  wake_.notify_one();
}

void InferenceService::session_op(SessionOp op, const std::string& name, SessionReply done, const std::string& to, SessionSnapshot upload) {
  std::lock_guard<std::mutex> lock(mu_);
  ops_.push_back([this, op, name, done, to, upload = std::move(upload)] {
    SessionOpResult r;
    try {
      switch (op) {
        case SessionOp::List: r.sessions = sessions_->list(); break;
        case SessionOp::Save: sessions_->save(name); break;
        case SessionOp::Fork:
          sessions_->fork(name, to);
          metrics_.state_copied("fork");
          break;
        case SessionOp::Export:
          r.snapshot = sessions_->export_session(name);
          metrics_.state_copied("export");
          break;
        case SessionOp::Import:
          sessions_->import_session(name, upload);
          metrics_.state_copied("import");
          break;
        case SessionOp::Delete: sessions_->remove(name); break;
      }
    } catch (const SessionError& e) {
      r.error = e.what();
      r.fault = e.fault;
    } catch (const Error& e) {
      r.error = e.what();
    }
    done(std::move(r));
  });
  wake_.notify_one();
}

void InferenceService::stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  wake_.notify_one();
}

size_t InferenceService::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return incoming_.size() + waiting_count_;
}

size_t InferenceService::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

size_t InferenceService::parked() const { return parked_count_; }

InferenceService::Health InferenceService::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!broken_.empty()) return {false, "broken", broken_};
  if (stopping_) return {false, "stopping", "the server is shutting down"};
  double quiet = double(now_ns() - progress_ns_.load()) * 1e-9;
  if ((has_work_ || !incoming_.empty()) && quiet > opts_.stall_seconds)
    return {false, "stalled", "no pipeline step finished for " + std::to_string(int(quiet)) + " s while requests wait (a stage is dead or lagging)"};
  return {true, "ok", ""};
}

void InferenceService::admit() {
  std::deque<std::pair<uint64_t, ServiceRequest>> in;
  std::vector<uint64_t> cancels;
  std::deque<std::function<void()>> ops;
  {
    std::lock_guard<std::mutex> lock(mu_);
    in.swap(incoming_);
    cancels.swap(cancels_);
    ops.swap(ops_);
    // Still queued while they move to waiting_: queued() and submit()'s limit must not miss them.
    waiting_count_ = waiting_.size() + in.size();
  }
  // Starting requests and session operations talk to the stages too: a stage that hangs there must
  // show in health() as one that hangs in a step does.
  if (!ops.empty() || !in.empty() || !waiting_.empty() || !parked_.empty()) has_work_ = true;
  for (auto& op : ops) op();
  for (auto& [id, r] : in) enqueue(id, std::move(r));
  for (uint64_t id : cancels) {
    // The request and its siblings (a leader's pending siblings end with it). Cancelling ends a request
    // at once, which takes it out of live_: the handles first.
    std::vector<uint64_t> handles;
    for (auto& [lid, l] : live_)
      if (lid == id || l->req.group == id) handles.push_back(l->handle);
    for (uint64_t h : handles) sched_->cancel(h, "cancelled");
    end_parked(id, "cancelled");
    for (auto w = waiting_.begin(); w != waiting_.end();) {
      if (w->first != id && w->second.group != id) {
        ++w;
        continue;
      }
      ServiceRequest gone = std::move(w->second);
      w = waiting_.erase(w);
      waiting_count_ = waiting_.size();  // out of the queue before its client hears it ended
      end_unstarted(gone, cancelled(gone));
    }
  }
  // Most urgent first, then in arrival order (a parked request before a waiting one of its priority:
  // it came first), as slots allow; the rest wait for running requests to finish or make way.
  while (true) {
    if (!parked_.empty() && (waiting_.empty() || parked_.front().priority <= waiting_.front().second.priority)) {
      if (!sessions_->slot_ready("")) break;
      resume_parked();
    } else if (!waiting_.empty() && sessions_->slot_ready(waiting_.front().second.session)) {
      auto [id, req] = std::move(waiting_.front());
      waiting_.pop_front();
      start(id, std::move(req));
    } else {
      break;
    }
  }
  preempt();
  waiting_count_ = waiting_.size();
  parked_count_ = parked_.size();
}

void InferenceService::enqueue(uint64_t id, ServiceRequest r, bool first_of_its_priority) {
  const int p = r.priority;
  auto at = std::find_if(waiting_.begin(), waiting_.end(), [&](const auto& w) {
    return first_of_its_priority ? w.second.priority >= p : w.second.priority > p;
  });
  waiting_.emplace(at, id, std::move(r));
}

void InferenceService::preempt() {
  const uint64_t state_bytes = model_.dims().state_floats() * sizeof(float);
  size_t coming = parking_;  // waiting requests that a park already asked for will free a slot for
  for (auto& [id, req] : waiting_) {
    if (coming > 0) {
      --coming;
      continue;
    }
    if (parked_bytes_ + (parking_ + 1) * state_bytes > opts_.scheduler.parked_bytes) return;
    // The least urgent running request, less urgent than this one; of those, the latest started (the
    // others are nearer their end).
    Live* victim = nullptr;
    uint64_t victim_id = 0;
    for (auto& [lid, l] : live_) {
      if (l->finished || l->parking || l->parked || l->req.priority <= req.priority) continue;
      if (!victim || l->req.priority > victim->req.priority ||
          (l->req.priority == victim->req.priority && l->start_order > victim->start_order)) {
        victim = l.get();
        victim_id = lid;
      }
    }
    if (!victim) return;
    victim->parking = true;
    ++parking_;
    sched_->park(victim->handle, [this, victim_id](ScheduledRequest rest, int slot) { parked(victim_id, std::move(rest), slot); });
  }
}

void InferenceService::parked(uint64_t id, ScheduledRequest rest, int slot) {
  auto it = live_.find(id);
  if (it == live_.end()) return model_.close_session(slot);  // cannot happen: a finished request is not parked
  Live& l = *it->second;
  --parking_;
  l.parking = false;
  l.parked = true;
  ++l.summary.preemptions;
  Parked p{id, l.req.priority, std::move(rest), model_.export_state(slot), l.req.session};
  model_.close_session(slot);
  if (!p.session.empty()) sessions_->parked(p.session);  // still busy: its state is with the request
  parked_bytes_ += p.state.size() * sizeof(float);
  metrics_.preempted();
  logging::info("request ", id, " parked (priority ", l.req.priority, ") for a more urgent request: ", l.summary.completion_tokens,
                " tokens generated, ", p.rest.max_tokens, " to go");
  auto at = std::find_if(parked_.begin(), parked_.end(), [&](const Parked& q) { return q.priority > p.priority; });
  parked_.insert(at, std::move(p));
  parked_count_ = parked_.size();
}

void InferenceService::resume_parked() {
  Parked p = std::move(parked_.front());
  parked_.pop_front();
  parked_bytes_ -= p.state.size() * sizeof(float);
  parked_count_ = parked_.size();
  auto it = live_.find(p.id);
  if (it == live_.end()) return;  // cannot happen: a parked request ends through end_parked
  Live& l = *it->second;
  auto on_finish = p.rest.on_finish;
  int slot = -1;
  try {
    slot = sessions_->open_slot();
    model_.import_state(slot, p.state);
    p.rest.slot = slot;
    if (p.session.empty()) p.rest.on_release = [this, slot](std::vector<int32_t>) { model_.close_session(slot); };
    else sessions_->resumed(p.session, slot);  // its on_release settles the session, wherever it runs
    l.parked = false;  // keeps its start order: not the first to make way again
    l.handle = sched_->submit(std::move(p.rest));
  } catch (const Error& e) {
    if (slot >= 0) model_.close_session(slot);
    if (!p.session.empty()) sessions_->parked(p.session);
    give_back(p);
    l.summary.error = std::string("could not resume after preemption: ") + e.what();
    if (on_finish) on_finish("error");
  }
}

void InferenceService::give_back(Parked& p) {
  if (p.session.empty()) return;  // a one-off request's state ends with it
  sessions_->parked_ended(p.session, std::move(p.state));
  if (p.rest.on_release) p.rest.on_release(p.rest.prompt);  // the rest's prompt never reached the state
  p.rest.on_release = nullptr;
}

void InferenceService::end_parked(uint64_t id, const std::string& reason) {
  for (auto p = parked_.begin(); p != parked_.end();) {
    auto it = live_.find(p->id);
    if (p->id != id && (it == live_.end() || it->second->req.group != id)) {
      ++p;
      continue;
    }
    auto on_finish = std::move(p->rest.on_finish);
    parked_bytes_ -= p->state.size() * sizeof(float);
    give_back(*p);  // first: a client told the request ended may send the session's next turn at once
    p = parked_.erase(p);
    if (on_finish) on_finish(reason);
  }
  parked_count_ = parked_.size();
}

void InferenceService::start_siblings(uint64_t leader, std::vector<ServiceRequest> siblings, int slot) {
  std::deque<std::pair<uint64_t, ServiceRequest>> alone;
  for (auto& sib : siblings) {
    sib.group = leader;
    uint64_t id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      id = next_id_++;
    }
    int copy = -1;
    if (slot >= 0) {
      while (model_.free_slots() <= 0 && sessions_->evict_one()) {
      }
      if (model_.free_slots() > 0) {
        copy = model_.clone_session(slot);
        metrics_.state_copied("sample");
      }
    }
    if (copy >= 0) start(id, std::move(sib), copy);
    else alone.emplace_back(id, std::move(sib));
  }
  for (auto it = alone.rbegin(); it != alone.rend(); ++it) enqueue(it->first, std::move(it->second), true);  // first in line
  waiting_count_ = waiting_.size();
}

void InferenceService::start(uint64_t id, ServiceRequest req, int shared_slot) {
  auto live = std::make_shared<Live>();
  live->req = std::move(req);
  live->start_order = ++starts_;
  live->siblings = std::move(live->req.siblings);
  live->req.siblings.clear();
  live->submitted = Clock::now();
  live->stops = StopMatcher(live->req.sampling.stop);
  live->summary.prompt_tokens = int(live->req.prompt.size());
  std::weak_ptr<Live> weak = live;
  auto finish = [this, weak, id](const std::string& reason) {
    auto l = weak.lock();
    if (!l || l->finished) return;
    l->finished = true;
    if (l->parking) {  // it ended before it could be parked
      l->parking = false;
      --parking_;
    }
    bool stopped = false;
    std::string tail = reason == "stop_string" ? "" : l->stops.push(l->utf8.finish(), stopped);
    if (!stopped && reason != "stop_string") tail += l->stops.flush();
    if (!tail.empty()) l->deliver(tail);
    auto now = Clock::now();
    l->summary.finish_reason = stopped ? "stop_string" : reason;
    if (reason == "format_violation") {
      l->summary.finish_reason = "error";
      l->summary.error = kDrawnOutsideTheFormat;
    }
    l->summary.queue_ms = ms((l->started == Clock::time_point{} ? now : l->started) - l->submitted);
    if (l->have_first) {
      l->summary.prefill_ms = ms(l->first_token - l->started);
      l->summary.decode_ms = ms(now - l->first_token);
    } else if (l->started != Clock::time_point{}) {
      l->summary.prefill_ms = ms(now - l->started);  // ended before a first token: prefilling (or scoring) all along
    }
    tokens_out_ += uint64_t(l->summary.completion_tokens);
    if (!l->req.session.empty())
      l->summary.session_tokens = l->session_before + l->req.prompt.size() + uint64_t(l->summary.completion_tokens);
    metrics_.request_done(served_as(l->req), l->summary.finish_reason, ms(now - l->submitted) / 1e3, l->have_first ? ms(l->first_token - l->submitted) / 1e3 : -1,
                          l->summary.prompt_tokens, l->summary.completion_tokens, l->summary.cached_tokens);
    const GenerationSummary& s = l->summary;
    logging::info("request ", id, ": ", s.prompt_tokens, " prompt tokens (", s.cached_tokens, " cached), ", s.completion_tokens, " generated, ",
                  s.finish_reason, "; queue ", ms_text(s.queue_ms), ", prefill ", ms_text(s.prefill_ms), ", decode ", ms_text(s.decode_ms),
                  l->req.session.empty() ? "" : ", session " + l->req.session, l->req.tuned_state.empty() ? "" : ", model " + l->req.tuned_state,
                  s.preemptions ? ", parked " + std::to_string(s.preemptions) + "x" : "");
    if (l->req.on_done) l->req.on_done(l->summary);
    live_.erase(id);
    // Siblings still waiting for this request's prompt state: cancelled with it, else on their own.
    if (!l->siblings.empty()) {
      std::vector<ServiceRequest> siblings = std::move(l->siblings);
      l->siblings.clear();
      if (reason == "cancelled") {
        end_unstarted(siblings, cancelled(l->req));
      } else {
        start_siblings(id, std::move(siblings), -1);
      }
    }
  };
  auto refuse = [&](const std::string& what) {
    logging::info("request ", id, " refused: ", what);
    live->summary.finish_reason = "error";
    live->summary.error = what;
    live->finished = true;
    metrics_.request_done(served_as(live->req), "error", 0, -1, live->summary.prompt_tokens, 0, 0);
    if (live->req.on_done) live->req.on_done(live->summary);
    if (!live->siblings.empty()) start_siblings(id, std::move(live->siblings), -1);  // they may fare better alone
  };

  // A slot and the tokens to run: a session's state (plus what it has not seen yet), or a fresh state,
  // possibly advanced over a cached prefix.
  const std::string session = live->req.session;
  std::vector<int32_t> prompt;
  int slot = -1;
  bool fresh = true;
  std::shared_ptr<OutputConstraint> constraint;
  try {
    if (live->req.prompt.empty()) fail("the prompt is empty");
    if (live->req.sampling.format != ResponseFormat::Text) {
      if (!json_vocabulary_) json_vocabulary_ = std::make_unique<JsonVocabulary>(tok_, model_.dims().vocab);
      constraint = json_vocabulary_->constraint(live->req.sampling.format, live->req.sampling.json_schema);
    }
    if (!live->siblings.empty() && !session.empty()) fail("several samples of one prompt cannot continue a session");
    if (live->req.score_prompt && (!session.empty() || !live->siblings.empty()))
      fail("prompt log-probabilities are for one sample without a session");
    if (shared_slot >= 0) {
      slot = shared_slot;  // the leader's state after all of the prompt but its last token
      fresh = false;
    } else if (!session.empty()) {
      SessionStore::Lease lease = sessions_->acquire(session);
      slot = lease.slot;
      fresh = lease.created;
      prompt = std::move(lease.pending);
      live->session_before = lease.tokens + prompt.size();
      if (!lease.created && live->req.preamble > 0 && live->req.preamble < live->req.prompt.size()) {
        live->req.prompt.erase(live->req.prompt.begin(), live->req.prompt.begin() + long(live->req.preamble));
        live->summary.prompt_tokens = int(live->req.prompt.size());
      }
    } else {
      slot = sessions_->open_slot();
    }
  } catch (const SessionError& e) {
    live->summary.session_fault = e.fault;
    return refuse(e.what());
  } catch (const Error& e) {
    return refuse(e.what());
  }
  prompt.insert(prompt.end(), live->req.prompt.begin(), live->req.prompt.end());
  const std::vector<int32_t> full = prompt;
  size_t cached = 0, snapshot = 0;
  // The start state's number (0: the model's own) is also the prefix cache's key for where a prefix began.
  const auto tuned = tuned_numbers_.find(live->req.tuned_state);
  const int origin = tuned == tuned_numbers_.end() ? 0 : tuned->second;
  if (shared_slot >= 0) {
    cached = prompt.size() - 1;
    prompt.erase(prompt.begin(), prompt.end() - 1);
  }
  try {
    if (!live->req.tuned_state.empty() && tuned == tuned_numbers_.end())
      fail("model '", live->req.tuned_state, "' is not served here");
    if (fresh && origin) {
      model_.restart_session(slot, origin);
      metrics_.state_copied("tuned");
    }
    if (fresh && cache_.enabled() && !live->req.score_prompt) {  // a scored prompt runs whole
      PrefixCache::Hit hit = cache_.lookup(origin, prompt);
      if (hit.tokens) {
        model_.import_state(slot, *hit.state);
        prompt.erase(prompt.begin(), prompt.begin() + long(hit.tokens));
        cached = hit.tokens;
      }
      snapshot = cache_.snapshot_point(origin, full, cached);
    }
  } catch (const Error& e) {
    if (session.empty()) model_.close_session(slot);
    else sessions_->release(session, full, 0);
    return refuse(e.what());
  }
  live->summary.cached_tokens = int(cached);
  tokens_in_ += prompt.size();

  ScheduledRequest sr;
  sr.prompt = prompt;
  sr.max_tokens = live->req.max_tokens;
  sr.sampling = live->req.sampling;
  sr.slot = slot;
  sr.constraint = std::move(constraint);
  if (live->req.score_prompt) {
    sr.score_prompt = std::max(0, live->req.sampling.logprobs);
    sr.on_prompt_scores = [weak](std::vector<SampledToken> scores) {
      auto l = weak.lock();
      if (!l || l->finished) return;
      auto& all = l->summary.prompt_logprobs;
      all.insert(all.end(), std::make_move_iterator(scores.begin()), std::make_move_iterator(scores.end()));
      if (all.size() + 1 == l->req.prompt.size() && l->req.on_prompt_scores) l->req.on_prompt_scores(all);
    };
  }
  if (snapshot > cached) {
    sr.snapshots.push_back({snapshot - cached, [this, origin, full, snapshot](int s) {
                              cache_.insert(origin, std::span<const int32_t>(full.data(), snapshot), model_.export_state(s));
                            }});
  }
  if (!live->siblings.empty()) {
    // The siblings start from copies of this state once all of the prompt but its last token is in it:
    // now if it already is, else right after the step that completes it (beside any cache snapshot).
    if (prompt.size() < 2) {
      std::vector<ServiceRequest> siblings = std::move(live->siblings);
      live->siblings.clear();
      start_siblings(id, std::move(siblings), slot);
    } else {
      sr.snapshots.push_back({prompt.size() - 1, [this, id, weak](int s) {
                                auto l = weak.lock();
                                if (!l || l->siblings.empty()) return;
                                std::vector<ServiceRequest> siblings = std::move(l->siblings);
                                l->siblings.clear();
                                start_siblings(id, std::move(siblings), s);
                              }});
    }
  }
  const uint64_t run_tokens = prompt.size();
  sr.on_release = [this, live, session, slot, run_tokens](std::vector<int32_t> unfed) {
    if (session.empty()) return model_.close_session(slot);
    uint64_t fed = run_tokens + uint64_t(live->summary.completion_tokens) - unfed.size();
    sessions_->release(session, std::move(unfed), fed);
  };
  sr.on_start = [weak] {
    if (auto l = weak.lock()) l->started = Clock::now();
  };
  sr.on_token = [this, weak](const SampledToken& sampled) {
    const int32_t t = sampled.token;
    auto l = weak.lock();
    if (!l || l->finished) return;
    auto now = Clock::now();
    if (!l->have_first) {
      l->have_first = true;
      l->first_token = now;
    } else {
      metrics_.inter_token(ms(now - l->last_token) / 1e3);
    }
    l->last_token = now;
    ++l->summary.completion_tokens;
    l->pending_tokens.push_back(sampled);
    bool stopped = false;
    std::string text = l->stops.push(l->utf8.push(generated_bytes(tok_, std::span<const int32_t>(&t, 1))), stopped);
    if (!text.empty() || stopped) {
      if (!text.empty()) l->deliver(text);
      l->pending_tokens.clear();  // a stop string's own tokens are not delivered
    }
    if (stopped) sched_->cancel(l->handle, "stop_string");
  };
  sr.on_finish = finish;
  live_[id] = live;
  try {
    live->handle = sched_->submit(std::move(sr));
    if (live->req.score_prompt && live->req.prompt.size() == 1 && live->req.on_prompt_scores) live->req.on_prompt_scores({});  // nothing to score
  } catch (const Error& e) {
    live_.erase(id);
    if (session.empty()) model_.close_session(slot);
    else sessions_->release(session, full, 0);
    return refuse(e.what());
  }
}

void InferenceService::update_metrics(bool with_stages) {
  auto now = Clock::now();
  double dt = std::chrono::duration<double>(now - rate_since_).count();
  Metrics::Gauges g;
  {
    std::lock_guard<std::mutex> lock(mu_);
    g.queued = incoming_.size() + waiting_count_;
    g.running = running_;
  }
  if (with_stages) stage_load_ = model_.stage_load();
  for (auto& s : stage_load_) {
    g.stage_busy.push_back(s.busy_fraction);
    g.stage_resident_bytes.push_back(s.resident_bytes);
  }
  g.slots_total = size_t(model_.slots());
  g.slots_used = size_t(std::max(0, model_.slots() - model_.free_slots()));
  g.sessions_slot = sessions_->count("slot");
  g.sessions_host = sessions_->count("host");
  g.sessions_disk = sessions_->count("disk");
  g.sessions_parked = sessions_->count("parked");
  g.session_host_bytes = sessions_->host_bytes_used();
  g.session_folder_failing = sessions_->folder_failing();
  g.parked = parked_.size();
  g.parked_bytes = parked_bytes_;
  g.state_bytes_per_request = model_.dims().state_floats() * sizeof(float);
  g.cache = cache_.stats();
  if (with_stages && dt > 0) {  // rates over the interval since the previous stage reading
    rates_ = {double(tokens_in_ - rate_in_) / dt, double(tokens_out_ - rate_out_) / dt};
    rate_since_ = now;
    rate_in_ = tokens_in_;
    rate_out_ = tokens_out_;
  }
  g.tokens_in_per_s = rates_.first;
  g.tokens_out_per_s = rates_.second;
  metrics_.set(g);
}

void InferenceService::run() {
  Scheduler sched(model_, opts_.scheduler.micro_batch_tokens, opts_.scheduler.prefill_chunk, penalty_free_tokens(tok_, model_.dims().vocab));
  sched_ = &sched;
  // Gauges are refreshed a few times a second and stage load every 2 s (a round trip to every stage),
  // never per step: the loop's hot path only steps.
  auto last_gauges = Clock::now(), last_stages = Clock::now(), last_expiry = Clock::now(), last_save = Clock::now();
  try {
    update_metrics(true);
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait_for(lock, std::chrono::seconds(1),
                       [&] {
                         return stopping_ || !incoming_.empty() || !waiting_.empty() || !parked_.empty() || !cancels_.empty() || !ops_.empty() ||
                                !sched.idle();
                       });
        if (stopping_) break;
      }
      progress_ns_ = now_ns();  // awake: health() measures stalls from here while work waits
      admit();
      has_work_ = !sched.idle();
      if (!sched.idle()) {
        sched.step();
        progress_ns_ = now_ns();
        has_work_ = !sched.idle();
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        running_ = live_.size();
      }
      auto now = Clock::now();
      if (opts_.sessions.idle_ttl_s > 0 && now - last_expiry > std::chrono::seconds(1)) {
        std::set<std::string> wanted;  // sessions that requests wait for stay
        for (auto& [id, r] : waiting_)
          if (!r.session.empty()) wanted.insert(r.session);
        const std::vector<std::string> gone = sessions_->expire(wanted);
        for (auto& name : gone) logging::info("session ", name, " expired: idle for more than ", opts_.sessions.idle_ttl_s, " s");
        metrics_.sessions_expired(gone.size());
        last_expiry = now;
      }
      if (opts_.sessions.save_interval_s > 0 && now - last_save > std::chrono::seconds(opts_.sessions.save_interval_s)) {
        // A crash then loses at most an interval of any conversation. A failed write (disk full) is
        // reported and tried again next time: the sessions themselves are still here.
        sessions_->save_all();
        last_save = now;
      }
      if (now - last_stages > std::chrono::seconds(2)) {
        update_metrics(true);
        last_stages = last_gauges = now;
      } else if (now - last_gauges > std::chrono::milliseconds(250)) {
        update_metrics(false);
        last_gauges = now;
      }
    }
    sched.cancel_all();  // running requests end "cancelled" through their callbacks; sessions are released
    while (!parked_.empty()) end_parked(parked_.front().id, "cancelled");
    if (opts_.sessions.persist && !opts_.sessions.dir.empty()) sessions_->save_all();
  } catch (const Error& e) {
    // The model failed (a stage died or stopped answering): nothing can be generated any more.
    logging::error("the model failed: ", e.what(), " (every running request ends with this error)");
    for (Parked& p : parked_) give_back(p);  // parked sessions' states are in host memory: they live on
    if (opts_.sessions.persist && !opts_.sessions.dir.empty()) {
      const size_t saved = sessions_->save_all(false);  // what host memory holds outlives the stages
      if (saved) logging::info("saved ", saved, " session(s) held in host memory to ", opts_.sessions.dir);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      broken_ = e.what();
    }
    for (auto& [id, l] : std::map<uint64_t, std::shared_ptr<Live>>(live_)) {
      if (l->finished) continue;
      l->finished = true;
      l->summary.finish_reason = "error";
      l->summary.error = std::string("the model failed: ") + e.what();
      if (l->req.on_done) l->req.on_done(l->summary);
      end_unstarted(l->siblings, l->summary);
    }
    live_.clear();
    parked_.clear();
    parked_bytes_ = 0;
    parked_count_ = 0;
    sched_ = nullptr;
    throw;
  }
  std::deque<std::pair<uint64_t, ServiceRequest>> never_started;
  {
    std::lock_guard<std::mutex> lock(mu_);
    never_started.swap(waiting_);
    for (auto& r : incoming_) never_started.push_back(std::move(r));
    incoming_.clear();
    waiting_count_ = 0;
  }
  for (auto& [id, r] : never_started) end_unstarted(r, cancelled(r));
  live_.clear();
  sched_ = nullptr;
}

}  // namespace skein
