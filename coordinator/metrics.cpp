#include "coordinator/metrics.h"

#include <cstdio>

#include "common/process_stats.h"

namespace skein {

namespace {
std::string num(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}
void metric(std::string& out, const std::string& name, const std::string& type, const std::string& help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}
}  // namespace

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++n_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  metric(out, name, "histogram", help);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += name + "_bucket{le=\"" + num(bounds_[i]) + "\"} " + std::to_string(cum) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(n_) + "\n";
  out += name + "_sum " + num(sum_) + "\n" + name + "_count " + std::to_string(n_) + "\n";
}

Metrics::Metrics()
    : latency_({0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}),
      ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}) {}

void Metrics::set(const Gauges& g) {
  std::lock_guard<std::mutex> lock(mu_);
  g_ = g;
}

void Metrics::request_done(const std::string& model, const std::string& reason, double latency_s, double ttft_s, int prompt_tokens,
                           int completion_tokens, int cached_tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  ++finished_[reason];
  ++by_model_[model];
  latency_.observe(latency_s);
  if (ttft_s >= 0) ttft_.observe(ttft_s);
  prompt_tokens_ += uint64_t(prompt_tokens);
  completion_tokens_ += uint64_t(completion_tokens);
  cached_tokens_ += uint64_t(cached_tokens);
}

void Metrics::inter_token(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  itl_.observe(seconds);
}

void Metrics::http_request(int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++http_[status];
}

void Metrics::state_copied(const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  ++copies_[what];
}

void Metrics::sessions_expired(size_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  expired_ += n;
}

void Metrics::preempted() {
  std::lock_guard<std::mutex> lock(mu_);
  ++preempted_;
}

void Metrics::connection_refused(const std::string& protocol) {
  std::lock_guard<std::mutex> lock(mu_);
  ++refused_[protocol];
}

std::string Metrics::prometheus() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string o;
  auto gauge = [&](const std::string& name, double v, const std::string& help) {
    metric(o, name, "gauge", help);
    o += name + " " + num(v) + "\n";
  };
  auto counter = [&](const std::string& name, double v, const std::string& help) {
    metric(o, name, "counter", help);
    o += name + " " + num(v) + "\n";
  };
  gauge("skein_queue_depth", double(g_.queued), "Requests waiting to be admitted.");
  gauge("skein_requests_running", double(g_.running), "Requests being generated (parked ones included).");
  gauge("skein_requests_parked", double(g_.parked), "Requests preempted by more urgent ones, their states in host memory until a slot is free.");
  gauge("skein_parked_bytes", double(g_.parked_bytes), "Host memory holding parked requests' states ([scheduler] parked_bytes).");
  gauge("skein_slots_used", double(g_.slots_used), "State slots in use on the workers (running requests and resident sessions).");
  gauge("skein_slots_total", double(g_.slots_total), "State slots per worker.");
  gauge("skein_state_bytes_per_request", double(g_.state_bytes_per_request), "Bytes of RWKV state one request or session holds.");
  metric(o, "skein_sessions", "gauge", "Named sessions by where their state is.");
  o += "skein_sessions{where=\"slot\"} " + std::to_string(g_.sessions_slot) + "\n";
  o += "skein_sessions{where=\"host\"} " + std::to_string(g_.sessions_host) + "\n";
  o += "skein_sessions{where=\"disk\"} " + std::to_string(g_.sessions_disk) + "\n";
  o += "skein_sessions{where=\"parked\"} " + std::to_string(g_.sessions_parked) + "\n";
  gauge("skein_session_host_bytes", double(g_.session_host_bytes), "Host memory holding evicted session states.");
  gauge("skein_session_folder_failing", g_.session_folder_failing ? 1 : 0,
        "1 while [sessions] dir refuses spilled states (disk full, folder gone): they stay in host memory and new sessions past its budget are refused.");
  metric(o, "skein_tokens_per_second", "gauge", "Tokens per second over the last few seconds (in: prompt, out: generated).");
  o += "skein_tokens_per_second{direction=\"in\"} " + num(g_.tokens_in_per_s) + "\n";
  o += "skein_tokens_per_second{direction=\"out\"} " + num(g_.tokens_out_per_s) + "\n";
  metric(o, "skein_stage_busy_fraction", "gauge", "Fraction of time each pipeline stage computed, over the last few seconds.");
  for (size_t k = 0; k < g_.stage_busy.size(); ++k) o += "skein_stage_busy_fraction{stage=\"" + std::to_string(k) + "\"} " + num(g_.stage_busy[k]) + "\n";
  metric(o, "skein_stage_resident_memory_bytes", "gauge",
         "Resident memory of each pipeline stage's process, polled every 2 s (one process serving alone is stage 0).");
  for (size_t k = 0; k < g_.stage_resident_bytes.size(); ++k)
    o += "skein_stage_resident_memory_bytes{stage=\"" + std::to_string(k) + "\"} " + std::to_string(g_.stage_resident_bytes[k]) + "\n";
  counter("skein_prompt_tokens_total", double(prompt_tokens_), "Prompt tokens of finished requests.");
  counter("skein_generated_tokens_total", double(completion_tokens_), "Tokens generated by finished requests.");
  counter("skein_cached_prompt_tokens_total", double(cached_tokens_), "Prompt tokens not prefilled: from the prefix cache or a copied prompt state.");
  metric(o, "skein_state_copies_total", "counter",
         "States copied instead of prefilled: session forks, samples started from their first sample's prompt state, sessions exported and "
         "imported over HTTP, requests started from a tuned state.");
  for (const char* what : {"fork", "sample", "export", "import", "tuned"}) {
    auto it = copies_.find(what);
    o += std::string("skein_state_copies_total{what=\"") + what + "\"} " + std::to_string(it == copies_.end() ? 0 : it->second) + "\n";
  }
  counter("skein_sessions_expired_total", double(expired_), "Sessions forgotten after [sessions] idle_ttl_s.");
  counter("skein_preemptions_total", double(preempted_), "Running requests parked to make way for more urgent ones.");
  metric(o, "skein_requests_total", "counter", "Finished requests by finish reason.");
  for (auto& [r, n] : finished_) o += "skein_requests_total{finish_reason=\"" + r + "\"} " + std::to_string(n) + "\n";
  metric(o, "skein_model_requests_total", "counter", "Finished requests by the model or tuned state they asked for.");
  for (auto& [m, n] : by_model_) {
    std::string label;  // Prometheus escapes: backslash, double quote, newline
    for (char ch : m) label += ch == '\\' ? "\\\\" : ch == '"' ? "\\\"" : ch == '\n' ? "\\n" : std::string(1, ch);
    o += "skein_model_requests_total{model=\"" + label + "\"} " + std::to_string(n) + "\n";
  }
  metric(o, "skein_connections_refused_total", "counter", "Client connections refused because the server was out of file descriptors.");
  for (const char* protocol : {"tcp", "http"}) {
    auto it = refused_.find(protocol);
    o += std::string("skein_connections_refused_total{protocol=\"") + protocol + "\"} " + std::to_string(it == refused_.end() ? 0 : it->second) + "\n";
  }
  metric(o, "skein_http_responses_total", "counter", "HTTP responses by status code.");
  for (auto& [s, n] : http_) o += "skein_http_responses_total{code=\"" + std::to_string(s) + "\"} " + std::to_string(n) + "\n";
  counter("skein_prefix_cache_lookups_total", double(g_.cache.lookups), "Prompts looked up in the prefix cache.");
  counter("skein_prefix_cache_hits_total", double(g_.cache.hits), "Prompts that started from a cached prefix state.");
  gauge("skein_prefix_cache_hit_rate", g_.cache.lookups ? double(g_.cache.hits) / double(g_.cache.lookups) : 0.0, "Hits per lookup since start.");
  gauge("skein_prefix_cache_entries", double(g_.cache.entries), "Cached prefix states.");
  gauge("skein_prefix_cache_bytes", double(g_.cache.bytes), "Bytes of cached prefix states.");
  latency_.render(o, "skein_request_duration_seconds", "Time from submission to the final event.");
  ttft_.render(o, "skein_time_to_first_token_seconds", "Time from submission to the first generated token.");
  itl_.render(o, "skein_inter_token_latency_seconds", "Time between consecutive generated tokens of a request.");
  // The standard process collector's names (Prometheus client libraries), for this process (rank 0),
  // read at scrape time.
  const ProcessStats p = process_stats();
  auto whole = [&](const std::string& name, uint64_t v, const std::string& help) {
    metric(o, name, "gauge", help);
    o += name + " " + std::to_string(v) + "\n";
  };
  whole("process_resident_memory_bytes", p.resident_bytes, "Resident memory size in bytes.");
  whole("process_virtual_memory_bytes", p.virtual_bytes, "Virtual memory size in bytes.");
  whole("process_open_fds", p.open_fds, "Number of open file descriptors.");
  whole("process_max_fds", p.max_fds, "Maximum number of open file descriptors.");
  counter("process_cpu_seconds_total", p.cpu_seconds, "Total user and system CPU time spent in seconds.");
  metric(o, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
  char start[32];  // %.9g would round the epoch to tens of seconds
  std::snprintf(start, sizeof start, "%.3f", p.start_time_seconds);
  o += std::string("process_start_time_seconds ") + start + "\n";
  return o;
}

}  // namespace skein
