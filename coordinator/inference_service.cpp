#include "coordinator/inference_service.h"

#include <chrono>

#include "common/error.h"
#include "coordinator/generator.h"
#include "coordinator/scheduler.h"

namespace skein {

using Clock = std::chrono::steady_clock;

struct InferenceService::Live {
  ServiceRequest req;
  uint64_t handle = 0;
  Utf8Stream utf8;
  StopMatcher stops{{}};
  std::vector<int32_t> pending_tokens;  // tokens whose text has not been sent yet
  GenerationSummary summary;
  Clock::time_point submitted, started, first_token;
  bool have_first = false, finished = false;
};

InferenceService::InferenceService(ModelHandle& model, const Tokenizer& tok, const SchedulerConfig& cfg, int queue_limit)
    : model_(model), tok_(tok), cfg_(cfg), queue_limit_(size_t(std::max(1, queue_limit))) {}

InferenceService::~InferenceService() { stop(); }

uint64_t InferenceService::submit(ServiceRequest r) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) fail("shutting down: not accepting requests");
  if (incoming_.size() >= queue_limit_) fail("overloaded: ", incoming_.size(), " requests are already queued");
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

void InferenceService::stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  wake_.notify_one();
}

size_t InferenceService::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return incoming_.size();
}

size_t InferenceService::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

void InferenceService::admit() {
  std::deque<std::pair<uint64_t, ServiceRequest>> in;
  std::vector<uint64_t> cancels;
  {
    std::lock_guard<std::mutex> lock(mu_);
    in.swap(incoming_);
    cancels.swap(cancels_);
  }
  for (auto& [id, req] : in) {
    auto live = std::make_shared<Live>();
    live->req = std::move(req);
    live->submitted = Clock::now();
    live->stops = StopMatcher(live->req.sampling.stop);
    live->summary.prompt_tokens = int(live->req.prompt.size());
    std::weak_ptr<Live> weak = live;
    auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
    auto finish = [this, weak, ms, id](const std::string& reason) {
      auto l = weak.lock();
      if (!l || l->finished) return;
      l->finished = true;
      bool stopped = false;
      std::string tail = reason == "stop_string" ? "" : l->stops.push(l->utf8.finish(), stopped);
      if (!stopped && reason != "stop_string") tail += l->stops.flush();
      if (!tail.empty()) {
        l->summary.text += tail;
        if (l->req.on_delta) l->req.on_delta(tail, l->pending_tokens);
      }
      auto now = Clock::now();
      l->summary.finish_reason = stopped ? "stop_string" : reason;
      l->summary.queue_ms = ms((l->started == Clock::time_point{} ? now : l->started) - l->submitted);
      if (l->have_first) {
        l->summary.prefill_ms = ms(l->first_token - l->started);
        l->summary.decode_ms = ms(now - l->first_token);
      }
      if (l->req.on_done) l->req.on_done(l->summary);
      live_.erase(id);
    };
    ScheduledRequest sr;
    sr.prompt = live->req.prompt;
    sr.max_tokens = live->req.max_tokens;
    sr.sampling = live->req.sampling;
    sr.on_start = [weak] {
      if (auto l = weak.lock()) l->started = Clock::now();
    };
    sr.on_token = [this, weak](int32_t t) {
      auto l = weak.lock();
      if (!l || l->finished) return;
      if (!l->have_first) {
        l->have_first = true;
        l->first_token = Clock::now();
      }
      ++l->summary.completion_tokens;
      l->pending_tokens.push_back(t);
      bool stopped = false;
      std::string text = l->stops.push(l->utf8.push(tok_.decode(std::span<const int32_t>(&t, 1))), stopped);
      if (!text.empty() || stopped) {
        l->summary.text += text;
        if (l->req.on_delta && !text.empty()) l->req.on_delta(text, l->pending_tokens);
        l->pending_tokens.clear();
      }
      if (stopped) sched_->cancel(l->handle, "stop_string");
    };
    sr.on_finish = finish;
    live_[id] = live;
    try {
      live->handle = sched_->submit(std::move(sr));
    } catch (const Error& e) {
      live->summary.finish_reason = "error";
      live->summary.error = e.what();
      live->finished = true;
      if (live->req.on_done) live->req.on_done(live->summary);
      live_.erase(id);
    }
  }
  for (uint64_t id : cancels)
    if (auto it = live_.find(id); it != live_.end()) sched_->cancel(it->second->handle, "cancelled");
}

void InferenceService::run() {
  Scheduler sched(model_, cfg_.micro_batch_tokens, cfg_.prefill_chunk, penalty_free_tokens(tok_, model_.dims().vocab));
  sched_ = &sched;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !incoming_.empty() || !cancels_.empty() || !sched.idle(); });
      if (stopping_) break;
    }
    admit();
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_ = live_.size();
    }
    if (!sched.idle()) sched.step();
  }
  sched.cancel_all();  // running requests end "cancelled" through their callbacks
  std::deque<std::pair<uint64_t, ServiceRequest>> never_started;
  {
    std::lock_guard<std::mutex> lock(mu_);
    never_started.swap(incoming_);
  }
  for (auto& [id, r] : never_started) {
    GenerationSummary s;
    s.finish_reason = "cancelled";
    s.prompt_tokens = int(r.prompt.size());
    if (r.on_done) r.on_done(s);
  }
  live_.clear();
  sched_ = nullptr;
}

}  // namespace skein
