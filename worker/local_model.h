// ModelHandle over the in-process engine: sessions are SessionStates in this process.
#pragma once
#include <chrono>
#include <map>

#include "coordinator/model_handle.h"
#include "worker/engine.h"

namespace skein {

class LocalModel final : public ModelHandle {
 public:
  // max_sessions: states kept at once (the config's slot count), like a cluster's slot table.
  LocalModel(Engine& engine, int max_sessions) : engine_(engine), max_sessions_(max_sessions) {}
  const ModelDims& dims() const override { return engine_.dims(); }
  int open_session() override;
  int free_slots() const override { return max_sessions_ - int(sessions_.size()); }
  int slots() const override { return max_sessions_; }
  std::vector<StageLoad> stage_load() override;
  void close_session(int session) override {
    sessions_.erase(session);
    samplers_.erase(session);
  }
  int clone_session(int session) override;
  int add_start_state(const std::vector<float>& state) override;
  void restart_session(int session, int start) override;
  void run(int session, std::span<const int32_t> tokens, int chunk, float* logits, bool all_positions) override;
  std::vector<float> export_state(int session) override { return get(session).to_host(); }
  void import_state(int session, const std::vector<float>& state) override { get(session).from_host(state); }
  void set_sampling(int session, const SamplingParams& params) override { samplers_.set(session, params); }
  void set_penalty_free(const std::vector<uint8_t>& penalty_free) override { samplers_.set_penalty_free(penalty_free); }
  uint64_t submit(const std::vector<BatchEntry>& entries) override;  // runs the step now
  void collect(uint64_t step, SampledToken* tokens) override;
  uint64_t submit_logits(const std::vector<LogitsEntry>& entries) override;  // runs the step now
  void collect_logits(uint64_t step, float* logits) override;

 private:
  SessionState& get(int session);
  Engine& engine_;
  std::map<int, SessionState> sessions_;
  std::vector<SessionState> start_states_;
  SlotSamplers samplers_;
  std::map<uint64_t, std::vector<SampledToken>> results_;
  std::map<uint64_t, std::vector<float>> logits_;
  uint64_t step_ = 0;
  int max_sessions_;
  int next_ = 0;
  double busy_seconds_ = 0;
  std::chrono::steady_clock::time_point since_ = std::chrono::steady_clock::now();
};

}  // namespace skein
