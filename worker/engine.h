// The in-process executor: a chain of stages (each a layer range with its own weight format) run one
// after another on this process's backend, with activations handed from stage to stage. A strategy with
// several segments on one host runs here; the cluster runs the same stages on separate ranks.
#pragma once
#include <map>
#include <memory>
#include <set>
#include <span>
#include <vector>

#include "model/rwkv_model.h"

namespace skein {

// What one stage holds.
struct StageSpec {
  int first_layer = 0, last_layer = 0;  // layers [first, last)
  bool embedding = false, head = false;
  WeightFormat format;
  std::set<int> streamed;
  int cuda_device = -1;  // the GPU it runs on; -1: the CPU
};

// A session's state: one shard per stage, concatenated in layer order (the official layout) on export.
class SessionState {
 public:
  std::vector<State> shards;
  size_t size() const;   // floats
  size_t bytes() const { return size() * sizeof(float); }
  std::vector<float> to_host() const;
  void from_host(const std::vector<float>& v);
  SessionState clone() const;
};

struct EngineSequence {
  std::span<const int32_t> tokens;
  SessionState* state = nullptr;
  float* logits = nullptr;  // host: [vocab], or [tokens x vocab] with all_positions; null = none
  bool all_positions = false;
  // Or: draw the next token from the last position's logits where they are computed (no logits then).
  const SampleRequest* sample = nullptr;
  SampledToken* token = nullptr;
  // And: score the first score_targets.size() positions against these next tokens into scores[]
  // (score_top alternatives each): a prompt's log-probabilities.
  std::span<const int32_t> score_targets{};
  int score_top = 0;
  SampledToken* scores = nullptr;
};

class Engine {
 public:
  // CPU stages run on `backend`; a stage with a cuda_device gets a CUDA backend of its own.
  Engine(std::shared_ptr<const Checkpoint> ck, const ModelDims& dims, const std::vector<StageSpec>& stages, Backend& backend);
  // The whole model as one stage.
  static std::vector<StageSpec> whole_model(const ModelDims& dims, const WeightFormat& format = {});

  const ModelDims& dims() const { return dims_; }
  const std::vector<std::unique_ptr<RwkvModel>>& stages() const { return stages_; }
  size_t matrix_bytes() const;    // resident matrices, what one decode step reads
  size_t resident_bytes() const;  // all prepared weights kept in memory
  size_t streamed_bytes() const;  // streamed layers (*N+): prepared bytes brought in per step

  SessionState new_state() const;
  void reset(SessionState& s) const;

  // Token ids must be < vocab (checked).
  void forward(std::span<const EngineSequence> batch);
  void forward(std::span<const int32_t> tokens, SessionState& state, float* logits, bool all_positions = false);

 private:
  // Activations on one backend; a stage boundary between two backends copies them through the host.
  struct Activations {
    DeviceBuffer x, v_first;
  };
  Activations& activations(Backend& be, size_t floats);
  size_t stage_sum(size_t (ModelWeights::*bytes)() const) const;

  ModelDims dims_;
  Backend& be_;
  std::map<int, std::unique_ptr<Backend>> gpus_;  // by device
  std::vector<std::unique_ptr<RwkvModel>> stages_;
  std::map<Backend*, Activations> acts_;
};

}  // namespace skein
