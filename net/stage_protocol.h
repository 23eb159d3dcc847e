// Messages between the coordinator (rank 0) and the stage workers. Control (step plans, slot operations)
// and data (activations, logits, state shards) travel under different MPI tags, so a stage can take the
// next plan while activations are still on their way.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "worker/token_logprobs.h"

namespace skein {

// Results of steps and replies to slot/stat operations travel under different tags, so the coordinator can
// export a state or read stage load while steps are in flight.
enum Tag : int { kTagControl = 1, kTagActivations = 2, kTagResult = 3, kTagReady = 4, kTagReply = 5, kTagNccl = 6 };

enum class StageOp : uint8_t {
  // ResetSlot: slot2 > 0 starts the slot from that start state (AddStartState, numbered from 1).
  Step = 1, ResetSlot, FreeSlot, CloneSlot, ExportSlot, ImportSlot, SetSampling, SetPenaltyFree, Stats, Echo, HopProbe, AddStartState, Shutdown
};

// HopProbe: two neighbouring stages send `slot` floats back and forth `slot2` times over the link that
// carries their activations (NCCL or MPI); blob "out" marks the stage that starts (and answers rank 0
// with a HopResult), "in" the one that answers.
struct HopResult {
  double best_round_trip_seconds = 0;
  int32_t nccl = 0;
};

// A stage's answer to Stats: time spent computing versus time since the previous Stats, and the stage
// process's resident memory now.
struct StageStats {
  double busy_seconds = 0;
  double wall_seconds = 0;
  uint64_t steps = 0;
  uint64_t resident_bytes = 0;
};

// What a step entry wants back from the last stage: nothing, logits (last or every position), or the
// token sampled after its last position.
enum class Want : uint8_t { None = 0, Last = 1, All = 2, Sample = 3 };

struct StepEntry {
  int32_t slot = 0;
  int32_t n_tokens = 0;
  Want want = Want::None;
  // Sampling steps: the entry's first `scored` positions are scored against their next tokens (the
  // message's `targets`, entries in order) with `top` alternatives each (a prompt's log-probabilities).
  int32_t scored = 0;
  int32_t top = 0;
  int32_t constrained = 0;  // a sampling entry whose draw is limited: its mask is in the message's `allowed`
};

struct ControlMessage {
  StageOp op = StageOp::Step;
  uint64_t step = 0;
  std::vector<StepEntry> entries;  // Step
  std::vector<int32_t> tokens;     // Step: all entries' tokens, in order (used by the first stage)
  std::vector<int32_t> targets;    // Step: the scored positions' next tokens, in entry order (used by the last stage)
  // Step, to the last stage: each constrained entry's allowed tokens, (vocab + 63) / 64 words each, in entry order.
  std::vector<uint64_t> allowed;
  int32_t slot = -1, slot2 = -1;   // slot operations (CloneSlot: slot -> slot2)
  std::vector<float> state;        // ImportSlot, AddStartState: this stage's shard
  std::string blob;                // SetSampling: encoded SamplingParams; SetPenaltyFree: one byte per token

  std::string encode() const;
  static ControlMessage decode(const std::string& bytes);  // throws skein::Error on malformed input
};

// A sampling step's result, last stage to rank 0: one SampledToken per sampling entry, in entry order,
// then one per scored position, in entry order.
std::string encode_sampled(const std::vector<SampledToken>& rows);
std::vector<SampledToken> decode_sampled(const std::string& bytes, size_t rows);  // throws skein::Error

}  // namespace skein
