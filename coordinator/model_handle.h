// What a command drives: a model with sessions, run locally (the in-process engine) or by stage workers
// under mpirun (the cluster). The generation loop and the CLI see only this.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "coordinator/sampler.h"
#include "model/architecture.h"
#include "worker/token_logprobs.h"

namespace skein {

class ModelHandle {
 public:
  virtual ~ModelHandle() = default;
  virtual const ModelDims& dims() const = 0;

  virtual int open_session() = 0;  // a fresh state; throws skein::Error when no slot is free
  virtual int free_slots() const = 0;
  virtual int slots() const = 0;  // states it can hold at once
  virtual void close_session(int session) = 0;
  virtual int clone_session(int session) = 0;
  // Start states besides the model's own (a server's tuned states), kept where the sessions' states are
  // (on a cluster each stage keeps its layers' part), so starting a session from one moves no state.
  // add_start_state returns its number, from 1; restart_session sets the session's state to start state
  // `start` (0: the model's own).
  virtual int add_start_state(const std::vector<float>& state) = 0;
  virtual void restart_session(int session, int start) = 0;

  // Runs tokens through the session's state, `chunk` tokens per forward call (chunks of one request
  // pipeline through the stages); writes the last position's logits, or every position's.
  virtual void run(int session, std::span<const int32_t> tokens, int chunk, float* logits, bool all_positions = false) = 0;

  // The whole state in the official layout (what state files hold), and back.
  virtual std::vector<float> export_state(int session) = 0;
  virtual void import_state(int session, const std::vector<float>& state) = 0;

  // Sampling happens where the logits are (on the cluster, the last stage): a session's parameters,
  // occurrence counts and random stream live there, and only token ids come back.
  virtual void set_sampling(int session, const SamplingParams& params) = 0;
  // penalty_free[t] != 0: token t's text is within " \t0123456789" (not counted by frequency penalties).
  virtual void set_penalty_free(const std::vector<uint8_t>& penalty_free) = 0;

  // Micro-batches: submit() hands over one step of several sessions (each with its own tokens) and may
  // return before it ran, so several steps can be in flight; collect() returns the step's sampled
  // tokens (one per entry with `sample`, in entry order, scored when the session's SamplingParams ask
  // for logprobs), then the entries' scored positions (in entry order), in submission order.
  struct BatchEntry {
    int session = 0;
    std::vector<int32_t> tokens;
    bool sample = true;  // draw the token that follows the entry's last token
    // Score the entry's first score_targets.size() positions against these next tokens, score_top
    // alternatives each (a prompt's log-probabilities); their results follow the samples in collect().
    std::vector<int32_t> score_targets{};
    int score_top = 0;
    // With `sample`: the tokens the draw may give (bit t of word t / 64, OutputConstraint::allowed);
    // empty: any token.
    std::vector<uint64_t> allowed{};
  };
  virtual uint64_t submit(const std::vector<BatchEntry>& entries) = 0;
  virtual void collect(uint64_t step, SampledToken* tokens) = 0;
  // Scoring steps (evaluation): like submit(), but an entry returns either nothing or the logits of
  // every one of its positions; collect_logits() writes those rows, in entry order.
  struct LogitsEntry {
    int session = 0;
    std::vector<int32_t> tokens;
    bool logits = false;
  };
  virtual uint64_t submit_logits(const std::vector<LogitsEntry>& entries) = 0;
  virtual void collect_logits(uint64_t step, float* logits) = 0;
  // Steps that may usefully be in flight at once (the pipeline depth).
  virtual int max_in_flight() const { return 1; }
  // Every stage's busy fraction since the previous call and its process's resident memory (for
  // /metrics); may be called with steps in flight.
  struct StageLoad {
    double busy_fraction = 0;
    uint64_t resident_bytes = 0;
  };
  virtual std::vector<StageLoad> stage_load() = 0;
};

}  // namespace skein
