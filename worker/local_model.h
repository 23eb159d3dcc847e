// ModelHandle over the in-process engine: sessions are SessionStates in this process.
#pragma once
#include <map>

#include "coordinator/model_handle.h"
#include "worker/engine.h"

namespace skein {

class LocalModel final : public ModelHandle {
 public:
  explicit LocalModel(Engine& engine) : engine_(engine) {}
  const ModelDims& dims() const override { return engine_.dims(); }
  int open_session() override;
  void close_session(int session) override {
    sessions_.erase(session);
    samplers_.erase(session);
  }
  int clone_session(int session) override;
  void run(int session, std::span<const int32_t> tokens, int chunk, float* logits, bool all_positions) override;
  std::vector<float> export_state(int session) override { return get(session).to_host(); }
  void import_state(int session, const std::vector<float>& state) override { get(session).from_host(state); }
  void set_sampling(int session, const SamplingParams& params) override { samplers_.insert_or_assign(session, SlotSampler(params)); }
  void set_penalty_free(const std::vector<uint8_t>& penalty_free) override { penalty_free_ = penalty_free; }
  uint64_t submit(const std::vector<BatchEntry>& entries) override;  // runs the step now
  void collect(uint64_t step, int32_t* tokens) override;

 private:
  SessionState& get(int session);
  Engine& engine_;
  std::map<int, SessionState> sessions_;
  std::map<int, SlotSampler> samplers_;
  std::vector<uint8_t> penalty_free_;
  std::map<uint64_t, std::vector<int32_t>> results_;
  uint64_t step_ = 0;
  int next_ = 0;
};

}  // namespace skein
