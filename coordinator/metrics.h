// Serving metrics, updated by the service thread and read by the HTTP thread; rendered in the
// Prometheus text format for GET /metrics.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "coordinator/prefix_cache.h"

namespace skein {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double v);
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (the last: above every bound)
  double sum_ = 0;
  uint64_t n_ = 0;
};

class Metrics {
 public:
  Metrics();
  struct Gauges {
    size_t queued = 0, running = 0, slots_used = 0, slots_total = 0;
    size_t sessions_slot = 0, sessions_host = 0, sessions_disk = 0, sessions_parked = 0;
    uint64_t session_host_bytes = 0, state_bytes_per_request = 0;
    bool session_folder_failing = false;  // the sessions folder refused the last spill
    size_t parked = 0;          // preempted requests waiting for a slot
    uint64_t parked_bytes = 0;  // their states, in host memory
    std::vector<double> stage_busy;
    std::vector<uint64_t> stage_resident_bytes;  // each stage process's, as of the last stage poll
    double tokens_in_per_s = 0, tokens_out_per_s = 0;
    PrefixCacheStats cache;
  };
  void set(const Gauges& g);
  // `model`: the name the request was served under (the model's, or a tuned state's).
  void request_done(const std::string& model, const std::string& finish_reason, double latency_s, double ttft_s, int prompt_tokens,
                    int completion_tokens, int cached_tokens);
  void inter_token(double seconds);
  void http_request(int status);
  // "fork" | "sample" | "export" | "import" | "tuned": a state copied instead of prefilled
  void state_copied(const std::string& what);
  void sessions_expired(size_t n);
  void preempted();  // a running request's state was parked for a more urgent one
  void connection_refused(const std::string& protocol);  // "tcp" | "http": the server was out of file descriptors
  std::string prometheus() const;

 private:
  mutable std::mutex mu_;
  Gauges g_;
  std::map<std::string, uint64_t> finished_;  // by finish reason
  std::map<std::string, uint64_t> by_model_;  // by the name served under
  std::map<int, uint64_t> http_;              // by status
  uint64_t prompt_tokens_ = 0, completion_tokens_ = 0, cached_tokens_ = 0;
  std::map<std::string, uint64_t> copies_;  // by what
  uint64_t expired_ = 0, preempted_ = 0;
  std::map<std::string, uint64_t> refused_;  // connections, by protocol
  Histogram latency_, ttft_, itl_;
};

}  // namespace skein
