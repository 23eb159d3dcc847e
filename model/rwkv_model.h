// The RWKV forward pass for every generation (v4, v5.0/5.1/5.2, v6, v7), written once against the
// Backend interface. One call runs a batch of sequences, each with its own state and its own number of
// tokens: their rows are stacked so every matrix product covers the whole batch, while token shift and
// WKV run per sequence. Parallel mode (many tokens), recurrent mode (one token) and any chunking are the
// same code path.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "model/state.h"
#include "model/weights.h"
#include "worker/backend.h"

namespace skein {

struct SequenceChunk {
  std::span<const int32_t> tokens;
  State* state = nullptr;
  float* logits = nullptr;      // host memory: [vocab], or [tokens x vocab] when all_positions; null = none
  bool all_positions = false;
};

class RwkvModel {
 public:
  RwkvModel(ModelWeights weights, Backend& backend);

  const ModelDims& dims() const { return w_.dims; }
  const ModelWeights& weights() const { return w_; }
  Backend& backend() const { return be_; }

  // Fresh state for this model's layers: zeros (v4: pp = -1e30), or the checkpoint's time_state.
  State new_state() const;
  void reset(State& s) const;

  // Whole model (embedding ... head). Token ids must be < vocab (checked).
  void forward(std::span<const SequenceChunk> batch);
  void forward(std::span<const int32_t> tokens, State& state, float* logits, bool all_positions = false);

  // Pipeline-stage pieces: rows of activations x [rows x C] (and v7's v_first) through this weight
  // range's layers; embedding and head only where this range holds them.
  void embed(std::span<const int32_t> tokens, float* x);
  void run_layers(float* x, float* v_first, std::span<const SequenceChunk> batch, int rows);
  void head(const float* x, const std::vector<int>& rows, float* logits_host);

 private:
  struct Seq { int offset; int n; State* state; };
  void time_mix(int l, const LayerWeights& lw, const std::vector<Seq>& seqs, int R, float* x, float* v_first);
  void channel_mix(int l, const LayerWeights& lw, const std::vector<Seq>& seqs, int R, float* x);
  float* scratch(int slot, size_t n);

  ModelWeights w_;
  Backend& be_;
  std::vector<DeviceBuffer> scratch_;
};

}  // namespace skein
