// The serving loop: requests arrive from any thread (the network's), the continuous-batching scheduler
// runs on the service thread, and results go back through each request's callbacks (called on the
// service thread). Text is streamed in whole UTF-8 characters and cut at stop strings. Named sessions
// (SessionStore) and the prompt-prefix cache (PrefixCache) live here, on the service thread, because
// both move states through the model.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/config.h"
#include "coordinator/json_constraint.h"
#include "coordinator/metrics.h"
#include "coordinator/model_handle.h"
#include "coordinator/prefix_cache.h"
#include "coordinator/sampler.h"
#include "coordinator/scheduler.h"
#include "coordinator/session_store.h"
#include "model/tokenizer.h"

namespace skein {

struct GenerationSummary {
  std::string finish_reason;  // length | stop_token | stop_string | format_complete | cancelled | error
  std::string error;          // when finish_reason is "error"
  std::optional<SessionFault> session_fault;  // when the error is the session's (busy, no room, ...)
  std::string text;           // everything generated (also when streaming)
  std::vector<SampledToken> logprobs;  // every generated token, scored, when the request asked (sampling.logprobs)
  std::vector<SampledToken> prompt_logprobs;  // prompt tokens 2..n scored, when the request asked (score_prompt)
  int prompt_tokens = 0, completion_tokens = 0;
  int cached_tokens = 0;        // prompt tokens that came from the prefix cache or the session's state
  uint64_t session_tokens = 0;  // tokens the session's state has seen once this request ends
  int preemptions = 0;          // times its state was parked in host memory for a more urgent request
  double queue_ms = 0, prefill_ms = 0, decode_ms = 0;
};

struct ServiceRequest {
  std::vector<int32_t> prompt;
  // The prompt's first `preamble` tokens are what a new state needs first (a chat's list of tools): a
  // session that goes on has them already, so it drops them.
  size_t preamble = 0;
  int max_tokens = 100;
  SamplingParams sampling;
  // Lower runs first (vLLM's convention). Waiting requests start in priority order, then arrival; one
  // that finds every slot busy preempts the least urgent running request of a higher number: that
  // request's state is parked in host memory ([scheduler] parked_bytes) and it goes on, exactly where
  // it stopped, once a slot is free again (a session's too: its session stays busy meanwhile).
  int priority = 0;
  std::string session;  // continue (or start) this named session; "" = a one-off request
  // A new state (one-off, or a session's first request) starts from this tuned state of the model
  // (ServiceOptions::tuned_states; "" = the model's own start). A session continues its own state.
  std::string tuned_state;
  // New text (whole characters) and the tokens it came from (scored when sampling.logprobs asks); may be
  // called many times.
  std::function<void(const std::string& text, const std::vector<SampledToken>& tokens)> on_delta;
  std::function<void(const GenerationSummary&)> on_done;  // exactly once
  // Score the prompt too: every prompt token after the first, under the model given the ones before it,
  // with sampling.logprobs alternatives (how clients score text: OpenAI's echo with logprobs). The
  // prompt then runs whole (no prefix cache); not with a session or siblings. on_prompt_scores gets them
  // once, before the first delta.
  bool score_prompt = false;
  std::function<void(const std::vector<SampledToken>&)> on_prompt_scores{};
  // More samples of the same prompt (OpenAI's n), each a request of its own (callbacks, sampling) without
  // a session. They start from a copy of this request's state once all of its prompt but the last token
  // is in it, so the prompt is prefilled once; with no slot free for a copy, a sibling prefills alone.
  // cancel() of this request's id cancels them too.
  std::vector<ServiceRequest> siblings;
  uint64_t group = 0;  // set by the service: the request whose cancel() also cancels this one
};

// n samples of one request (the protocols' "n"): `base` n times, sample i drawing with seed + i and given
// its callbacks by `attach(sample, i)`; the samples after the first ride as its siblings.
ServiceRequest samples_of(const ServiceRequest& base, int n, const std::function<void(ServiceRequest&, int)>& attach);

struct ServiceOptions {
  std::string model_name;  // what clients call the model (OpenAI's "model")
  // Start states served beside the model's own, by name (model/initial_state.h: tuned_start_state): one
  // loaded model, several state-tuned variants of it, chosen per request.
  std::map<std::string, std::vector<float>> tuned_states;
  SchedulerConfig scheduler;
  int queue_limit = 256;
  SessionsConfig sessions;
  CacheConfig cache;
  StateFileHeader state_header;  // the model saved session files belong to
  double stall_seconds = 5;
};

enum class SessionOp { List, Save, Delete, Fork, Export, Import };

class InferenceService {
 public:
  InferenceService(ModelHandle& model, const Tokenizer& tok, ServiceOptions opts);
  ~InferenceService();

  // Thread-safe. Throws skein::Error("overloaded: ...") at once when the queue is full.
  uint64_t submit(ServiceRequest r);
  void cancel(uint64_t id);  // thread-safe; on_done follows with "cancelled"
  // Thread-safe; runs between steps on the service thread, then `done` (there) gets the sessions
  // (List), the session (Export), or why the operation was refused. `to`: the new session of a Fork;
  // `upload`: the session an Import creates.
  struct SessionOpResult {
    std::vector<SessionInfo> sessions;
    SessionSnapshot snapshot;
    std::string error;  // "" when done
    SessionFault fault = SessionFault::Failed;
  };
  using SessionReply = std::function<void(SessionOpResult)>;  // by value: an export's state file moves on
  void session_op(SessionOp op, const std::string& name, SessionReply done, const std::string& to = "", SessionSnapshot upload = {});

  // The service loop, on the calling thread, until stop(); then every open request ends "cancelled" and,
  // with [sessions] persist, every session is saved. A model failure ends every request with an error,
  // marks the service broken and is rethrown.
  void run();
  void stop();  // thread-safe

  // The tuned state a request's "model" asks for: "" for the model itself (its own name, no name, or any
  // name when no tuned states are served, so single-model clients may send what they like), else that
  // tuned state's name. Throws skein::Error naming what is served otherwise. Thread-safe.
  std::string tuned_state_for(const std::string& model) const;
  std::vector<std::string> model_names() const;  // the model's, then each tuned state's
  const std::string& model_name() const { return opts_.model_name; }

  size_t queued() const;
  size_t running() const;  // started and not finished, parked ones included
  size_t parked() const;   // preempted: their state in host memory until a slot is free
  Metrics& metrics() { return metrics_; }

  struct Health {
    bool ok = true;
    std::string status;  // ok | stalled | broken | stopping
    std::string detail;
  };
  Health health() const;  // thread-safe

 private:
  struct Live;
  struct Parked;
  void admit();
  // `shared_slot` >= 0: a sibling's copy of its leader's state, all of the prompt but its last token in it.
  void start(uint64_t id, ServiceRequest req, int shared_slot = -1);
  // A leader's siblings, started from copies of `slot` (or, with -1 or no slot free, waiting to prefill alone).
  void start_siblings(uint64_t leader, std::vector<ServiceRequest> siblings, int slot);
  void update_metrics(bool with_stages);
  // Preemption: running requests make way for more urgent waiting ones; parked ones resume in turn.
  void enqueue(uint64_t id, ServiceRequest r, bool first_of_its_priority = false);
  void preempt();
  void parked(uint64_t id, ScheduledRequest rest, int slot);
  void resume_parked();
  void end_parked(uint64_t id, const std::string& reason);  // it and its group's parked requests
  void give_back(Parked& p);  // a session's parked state, back to its session as the request ends
  const std::string& served_as(const ServiceRequest& r) const { return r.tuned_state.empty() ? opts_.model_name : r.tuned_state; }

  ModelHandle& model_;
  const Tokenizer& tok_;
  ServiceOptions opts_;
  size_t queue_limit_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::pair<uint64_t, ServiceRequest>> incoming_;
  // Admitted but waiting for a slot (every slot runs a request), most urgent first; service thread
  // only, counted in queued().
  std::deque<std::pair<uint64_t, ServiceRequest>> waiting_;
  // Preempted requests, most urgent first: the rest of the request and its state (service thread only).
  struct Parked {
    uint64_t id;
    int priority;
    ScheduledRequest rest;
    std::vector<float> state;
    std::string session;  // its session's name ("" for a one-off request)
  };
  std::deque<Parked> parked_;
  uint64_t parked_bytes_ = 0;
  size_t parking_ = 0;  // parks asked for and not yet done (each frees a slot soon)
  uint64_t starts_ = 0;  // requests started so far: a Live's start order
  std::atomic<size_t> waiting_count_{0}, parked_count_{0};
  std::vector<uint64_t> cancels_;
  std::deque<std::function<void()>> ops_;
  bool stopping_ = false;
  std::string broken_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::shared_ptr<Live>> live_;  // service thread only
  size_t running_ = 0;
  Scheduler* sched_ = nullptr;
  std::unique_ptr<SessionStore> sessions_;
  PrefixCache cache_;
  std::map<std::string, int> tuned_numbers_;  // a tuned state's start-state number in the model
  std::unique_ptr<JsonVocabulary> json_vocabulary_;  // JSON mode's token masks, made at its first request
  Metrics metrics_;
  uint64_t tokens_in_ = 0, tokens_out_ = 0;  // service thread, as are the rates below
  std::chrono::steady_clock::time_point rate_since_ = std::chrono::steady_clock::now();
  uint64_t rate_in_ = 0, rate_out_ = 0;
  std::pair<double, double> rates_{0, 0};
  std::vector<ModelHandle::StageLoad> stage_load_;
  std::atomic<int64_t> progress_ns_{0};       // steady clock of the last finished step (or of being idle)
  std::atomic<bool> has_work_{false};
};

}  // namespace skein
