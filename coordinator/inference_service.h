// The serving loop: requests arrive from any thread (the network's), the continuous-batching scheduler
// runs on the service thread, and results go back through each request's callbacks (called on the
// service thread). Text is streamed in whole UTF-8 characters and cut at stop strings.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "coordinator/config.h"
#include "coordinator/model_handle.h"
#include "coordinator/sampler.h"
#include "model/tokenizer.h"

namespace skein {

struct GenerationSummary {
  std::string finish_reason;  // length | stop_token | stop_string | cancelled | error
  std::string error;          // when finish_reason is "error"
  std::string text;           // everything generated (also when streaming)
  int prompt_tokens = 0, completion_tokens = 0;
  double queue_ms = 0, prefill_ms = 0, decode_ms = 0;
};

struct ServiceRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 100;
  SamplingParams sampling;
  // New text (whole characters) and the tokens it came from; may be called many times.
  std::function<void(const std::string& text, const std::vector<int32_t>& tokens)> on_delta;
  std::function<void(const GenerationSummary&)> on_done;  // exactly once
};

class InferenceService {
 public:
  InferenceService(ModelHandle& model, const Tokenizer& tok, const SchedulerConfig& cfg, int queue_limit);
  ~InferenceService();

  // Thread-safe. Throws skein::Error("overloaded: ...") at once when the queue is full.
  uint64_t submit(ServiceRequest r);
  void cancel(uint64_t id);  // thread-safe; on_done follows with "cancelled"

  // The service loop, on the calling thread, until stop(); then every open request ends "cancelled".
  void run();
  void stop();  // thread-safe

  size_t queued() const;
  size_t running() const;

 private:
  struct Live;
  void admit();

  ModelHandle& model_;
  const Tokenizer& tok_;
  SchedulerConfig cfg_;
  size_t queue_limit_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::pair<uint64_t, ServiceRequest>> incoming_;
  std::vector<uint64_t> cancels_;
  bool stopping_ = false;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::shared_ptr<Live>> live_;  // service thread only
  size_t running_ = 0;
  class Scheduler* sched_ = nullptr;
};

}  // namespace skein
