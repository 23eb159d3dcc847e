// One stage of the RWKV forward pass (a layer range, plus the embedding and/or head where the range
// holds them) for every generation (v4, v5.0/5.1/5.2, v6, v7), written once against the Backend
// interface. A call runs a batch of sequences, each with its own state and number of tokens: their rows
// are stacked so every matrix product covers the whole batch, while token shift and WKV run per
// sequence. Parallel mode (many tokens), recurrent mode (one token) and any chunking are the same path.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <vector>

#include "model/state.h"
#include "model/weights.h"
#include "worker/backend.h"
#include "worker/token_logprobs.h"

namespace skein {

struct StageSequence {
  int n_tokens = 0;
  State* state = nullptr;  // this stage's shard of the sequence's state
};

class RwkvModel {
 public:
  RwkvModel(ModelWeights weights, Backend& backend);

  const ModelDims& dims() const { return w_.dims; }
  const ModelWeights& weights() const { return w_; }
  // Replaces the embedding lookup with a table already normalised by ln0 ([vocab x C]).
  void set_embedding_table(std::shared_ptr<const std::vector<float>> t) { w_.emb_override = std::move(t); }
  Backend& backend() const { return be_; }

  // Fresh state for this model's layers: zeros (v4: pp = -1e30), or the checkpoint's time_state.
  State new_state() const;
  void reset(State& s) const;

  // x [rows x C] = ln0(emb[tokens]); only on the stage that holds the embedding.
  void embed(std::span<const int32_t> tokens, float* x);
  // Rows of activations x (and v7's v_first, [rows x C]) through this stage's layers, in place.
  void run_layers(float* x, float* v_first, std::span<const StageSequence> batch, int rows);
  // ln_out + head for the listed rows of x; only on the stage that holds the head.
  void head(const float* x, const std::vector<int>& rows, float* logits_host);
  // The same, then one token per row drawn on this stage's device (only token ids come back, and the
  // log-probabilities of the rows whose requests ask for them).
  void head_sample(const float* x, const std::vector<int>& rows, std::span<const SampleRequest> requests, SampledToken* out);
  // The same rows' logits scored on the host: out[i] is targets[i] under row i, with tops[i] alternatives
  // (a prompt's log-probabilities: each position against the token that follows it).
  void head_score(const float* x, const std::vector<int>& rows, std::span<const int32_t> targets, std::span<const int> tops, SampledToken* out);

  // The most scratch a stage with `layers` and/or the `head` allocates on its backend for steps of up
  // to `rows` rows (the activations between ops, the head's logits): each buffer is at most 1.5 times
  // its largest request, as it grows by half again. The plan counts it against the device's memory.
  static uint64_t scratch_bytes(const ModelDims& d, int rows, bool layers, bool head);

 private:
  struct Seq { int offset; int n; State* state; };
  void run_layer(int l, const LayerWeights& lw, const std::vector<Seq>& seqs, int R, float* x, float* v_first);
  void time_mix(int l, const LayerWeights& lw, const std::vector<Seq>& seqs, int R, float* x, float* v_first);
  void channel_mix(int l, const LayerWeights& lw, const std::vector<Seq>& seqs, int R, float* x);
  float* scratch(int slot, size_t n);
  float* head_logits(const float* x, const std::vector<int>& rows);  // device [rows x V]
  // The batch's sequences for a recurrence of layer l: rows and the op's part of each state.
  static std::vector<SeqSlice> slices(const std::vector<Seq>& seqs, int l, size_t state_offset);

  // Decode steps recorded per batch size (CUDA graphs), valid while the buffers they use stay put.
  struct Recorded {
    int batch = 0;
    const float *x = nullptr, *v_first = nullptr;
    uint64_t scratch_epoch = 0;
    bool failed = false;  // recording is not possible for this step: run it directly
    std::unique_ptr<StepRecording> rec;
  };
  void run_recorded(int batch, const float* x, const float* v_first, const std::function<void()>& step);

  ModelWeights w_;
  Backend& be_;
  std::vector<DeviceBuffer> scratch_;
  std::vector<Recorded> recorded_;  // most recent last
  // Streamed layers prepared once and held in host memory, on a backend that streams from there (GPU).
  std::map<int, LayerWeights> held_;
  // A state-tuned checkpoint's initial wkv state of each streamed layer (reset() needs it every time).
  std::map<int, Vector> streamed_time_state_;
  uint64_t scratch_epoch_ = 0;      // bumped when a scratch buffer moves
};

}  // namespace skein
