// The coordinator's side of the cluster (rank 0): it owns the slot numbering, sends step plans and slot
// operations to the stage ranks, and collects logits and state shards. It never touches weights.
#pragma once
#include <map>
#include <set>
#include <vector>

#include "coordinator/model_handle.h"
#include "net/mpi_world.h"
#include "net/stage_protocol.h"

namespace skein {

class ClusterClient final : public ModelHandle {
 public:
  // stage_ranks[k] runs stage k; state_floats[k] is the size of its shard of one session's state.
  ClusterClient(MpiWorld& world, const ModelDims& dims, std::vector<int> stage_ranks, std::vector<size_t> state_floats, int max_slots);
  ~ClusterClient() override;

  const ModelDims& dims() const override { return dims_; }
  int open_session() override;
  int free_slots() const override { return max_slots_ - int(used_.size()); }
  int slots() const override { return max_slots_; }
  std::vector<StageLoad> stage_load() override;
  void close_session(int session) override;
  int clone_session(int session) override;
  int add_start_state(const std::vector<float>& state) override;
  void restart_session(int session, int start) override;
  void run(int session, std::span<const int32_t> tokens, int chunk, float* logits, bool all_positions) override;
  std::vector<float> export_state(int session) override;
  void import_state(int session, const std::vector<float>& state) override;

  void shutdown();  // tells every stage to exit (also done by the destructor)

  // Micro-batches: submit() sends one step (several sessions, each its own tokens) and returns at once,
  // so several steps are in flight; collect() takes a step's logits (rows in entry order), in submission
  // order. Entries wanting nothing produce no result.
  struct Entry {
    int session;
    std::vector<int32_t> tokens;
    Want want = Want::Last;
    std::vector<int32_t> score_targets{};  // with Want::Sample or None: BatchEntry's scored positions
    int score_top = 0;
    std::vector<uint64_t> allowed{};       // with Want::Sample: BatchEntry's allowed tokens
  };
  uint64_t submit_step(const std::vector<Entry>& entries);
  void collect(uint64_t step, float* logits);  // a step whose entries want logits
  void set_sampling(int session, const SamplingParams& params) override;
  void set_penalty_free(const std::vector<uint8_t>& penalty_free) override;
  uint64_t submit(const std::vector<BatchEntry>& entries) override;
  void collect(uint64_t step, SampledToken* tokens) override;  // a step whose entries sample
  uint64_t submit_logits(const std::vector<LogitsEntry>& entries) override;
  void collect_logits(uint64_t step, float* logits) override { collect(step, logits); }
  int max_in_flight() const override { return int(ranks_.size()); }
  size_t rows_wanted(const std::vector<Entry>& entries) const;

  // Busy and wall time of every stage since the previous call.
  std::vector<StageStats> stage_stats();
  // Round trip of a `bytes` message between the coordinator and stage `k`, in seconds.
  double echo_seconds(size_t k, size_t bytes);
  // Best of `reps` round trips of `floats` between stage k and stage k+1 over their activation link
  // (whether that was NCCL is in the result). The pipeline must be idle.
  HopResult hop_round_trip(size_t k, size_t floats, int reps);
  size_t stages() const { return ranks_.size(); }

 private:
  int take_slot();
  // `state` cut into each stage's shard, sent as `op` on `slot`.
  void send_shards(StageOp op, int slot, const std::vector<float>& state);
  void broadcast(const struct ControlMessage& m);

  MpiWorld& world_;
  ModelDims dims_;
  std::vector<int> ranks_;
  std::vector<size_t> state_floats_;
  int max_slots_;
  int start_states_ = 0;  // added to every stage
  std::set<int> used_;
  uint64_t step_ = 0;
  struct Pending {
    size_t logit_rows = 0, samples = 0;
  };
  std::map<uint64_t, Pending> pending_;  // submitted steps that will send results
  bool down_ = false;
};

}  // namespace skein
