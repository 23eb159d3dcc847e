// Continuous batching over a ModelHandle. Requests join and leave between steps; every step is a
// micro-batch mixing prefill chunks and decode tokens up to a token budget; up to max_in_flight()
// micro-batches are in flight, so every pipeline stage has work. A prompt's chunks do not wait for each
// other (state dependencies are per layer: chunk k+1 may enter stage 1 once chunk k left it); a decoding
// request has one token in flight at a time. Sampling happens where the logits are (ModelHandle); the
// scheduler never touches tensors, only token ids.
#pragma once
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/model_handle.h"
#include "coordinator/output_constraint.h"
#include "coordinator/sampler.h"

namespace skein {

struct ScheduledRequest {
  std::vector<int32_t> prompt;  // must not be empty
  int max_tokens = 100;
  SamplingParams sampling;
  std::function<void(const SampledToken& token)> on_token;    // each generated token (stop tokens excluded)
  // "length", "stop_token", "format_complete" (the constraint's output is whole), "format_violation" (a
  // drawn token the constraint refused: non-finite logits), "cancelled" or a cancel() reason.
  std::function<void(const std::string& reason)> on_finish;
  std::function<void()> on_start{};                           // its first micro-batch left the queue
  // A slot the caller owns (a kept session, or a state imported from the prefix cache): the request runs
  // on it and leaves it open. on_release then reports the tokens that never reached the state (prompt
  // not yet prefilled, the last sampled token) once nothing of the request is in flight.
  int slot = -1;
  std::function<void(std::vector<int32_t> unfed)> on_release{};
  // Each called once right after the first `at` prompt tokens were submitted (0 < at < prompt size; in
  // any order); an export or a copy of the slot then sees exactly those tokens (slot operations are
  // ordered after earlier steps). The prefix cache and a request's siblings both take one.
  struct Snapshot {
    size_t at = 0;
    std::function<void(int slot)> call;
  };
  std::vector<Snapshot> snapshots{};
  // Structured output: every draw is limited to the tokens it allows, and the request ends once its
  // output is complete. Null: any token.
  std::shared_ptr<OutputConstraint> constraint{};
  // >= 0: score every prompt position after the first against the prompt's next token, with that many
  // alternatives; on_prompt_scores gets them in prompt order, a chunk at a time. With max_tokens 0 the
  // prompt still runs (to be scored) and the request then ends "length".
  int score_prompt = -1;
  std::function<void(std::vector<SampledToken> scores)> on_prompt_scores{};
};

class Scheduler {
 public:
  // penalty_free: see ModelHandle::set_penalty_free (penalty_free_tokens() computes it from a tokenizer).
  Scheduler(ModelHandle& model, int micro_batch_tokens, int prefill_chunk, const std::vector<uint8_t>& penalty_free);
  ~Scheduler();

  // Joins at the next step; throws skein::Error for an invalid request or when no session slot is free.
  // Returns a handle for cancel().
  uint64_t submit(ScheduledRequest r);
  // Ends a request with `reason` (its on_finish is called; nothing more is generated). Unknown or
  // finished handles are ignored.
  void cancel(uint64_t handle, const std::string& reason = "cancelled");
  // Takes a running request off the model without ending it (preemption). Once none of its steps is in
  // flight, `parked` gets the slot it ran on (the caller's again, its state exactly after the tokens
  // fed so far) and the rest of the request: the tokens not yet fed as its prompt, the tokens still to
  // generate as max_tokens, its draws so far in sampling.drawn, the snapshots still to come, and its
  // callbacks (on_release too, which may name the old slot: the caller sets both anew). Submitted on a
  // slot holding that state, the rest generates what the request would have.
  // A request that ends first (its last token was in flight, or it is cancelled) is not parked.
  using Parked = std::function<void(ScheduledRequest rest, int slot)>;
  void park(uint64_t handle, Parked parked);
  bool idle() const;
  void step();                      // submits what it can, then completes the oldest micro-batch
  void run_until_idle();
  void cancel_all();                // finishes every request with "cancelled"

  uint64_t steps() const { return steps_; }

 private:
  struct Active;
  struct InFlight {
    uint64_t id;
    struct Entry {
      Active* request;
      bool sample;    // draws a token
      size_t scored;  // prompt positions it scores
      bool ends_prompt;
    };
    std::vector<Entry> entries;
  };
  Active* running(uint64_t handle);  // the request not ended yet with this handle, or null
  bool fill();
  void take_tokens(const InFlight& f);  // the step's sampled tokens into tokens_
  void complete(InFlight& f);
  void finish(Active& a, const std::string& reason);
  void release(Active& a);  // the request left: its slot is closed or handed back
  void hand_over(Active& a);  // a parked request left: its rest and slot go to the caller
  void reap();

  ModelHandle& model_;
  int budget_, chunk_;
  std::vector<std::unique_ptr<Active>> active_;
  std::deque<InFlight> in_flight_;
  std::vector<SampledToken> tokens_;
  uint64_t steps_ = 0, next_handle_ = 1;
};

}  // namespace skein
