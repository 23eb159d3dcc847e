// Runs a model over a golden case in every mode the official package was recorded in.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/rwkv_model.h"
#include "worker/cpu_backend.h"

namespace skein::test {

struct ModelUnderTest {
  std::unique_ptr<CpuBackend> backend;
  std::unique_ptr<RwkvModel> model;
};

// Loads a checkpoint; with `emb_ln0` the official normalised embedding table replaces the lookup.
ModelUnderTest load_for_test(const std::string& path, const std::string& emb_ln0 = "");

struct ModeOutputs {
  std::vector<float> seq_last, seq_full, rnn, chunked_last, chunked_full;
  std::vector<float> state_seq, state_rnn, state_chunked;
};

ModeOutputs run_modes(RwkvModel& m, const std::vector<int32_t>& tokens, const std::vector<int>& chunks);

}  // namespace skein::test
