// What a command drives: a model with sessions, run locally (the in-process engine) or by stage workers
// under mpirun (the cluster). The generation loop and the CLI see only this.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "model/architecture.h"

namespace skein {

class ModelHandle {
 public:
  virtual ~ModelHandle() = default;
  virtual const ModelDims& dims() const = 0;

  virtual int open_session() = 0;  // a fresh state; throws skein::Error when no slot is free
  virtual void close_session(int session) = 0;
  virtual int clone_session(int session) = 0;

  // Runs tokens through the session's state, `chunk` tokens per forward call (chunks of one request
  // pipeline through the stages); writes the last position's logits, or every position's.
  virtual void run(int session, std::span<const int32_t> tokens, int chunk, float* logits, bool all_positions = false) = 0;

  // The whole state in the official layout (what state files hold), and back.
  virtual std::vector<float> export_state(int session) = 0;
  virtual void import_state(int session, const std::vector<float>& state) = 0;

  // Micro-batches: submit() hands over one step of several sessions (each with its own tokens) and may
  // return before it ran, so several steps can be in flight; collect() returns a step's logits (one row
  // per entry that wants them, in entry order), in submission order.
  struct BatchEntry {
    int session = 0;
    std::vector<int32_t> tokens;
    bool want_logits = true;  // of the entry's last token
  };
  virtual uint64_t submit(const std::vector<BatchEntry>& entries) = 0;
  virtual void collect(uint64_t step, float* logits) = 0;
  // Steps that may usefully be in flight at once (the pipeline depth).
  virtual int max_in_flight() const { return 1; }
};

}  // namespace skein
