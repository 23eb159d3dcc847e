// Runs a model over a golden case in every mode the official package was recorded in.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/generator.h"
#include "model/checkpoint.h"
#include "model/pth_writer.h"
#include "worker/engine.h"
#include "worker/cpu_backend.h"

namespace skein::test {

struct ModelUnderTest {
  std::unique_ptr<CpuBackend> backend;
  std::unique_ptr<Engine> model;
};

// Loads a checkpoint, placed by `strategy` (empty: one stage, stored dtype); with `emb_ln0` the
// official normalised embedding table replaces the lookup.
ModelUnderTest load_for_test(const std::string& path, const std::string& emb_ln0 = "", const std::string& strategy = "");

struct ModeOutputs {
  std::vector<float> seq_last, seq_full, rnn, chunked_last, chunked_full;
  std::vector<float> state_seq, state_rnn, state_chunked;
};

// Copies a checkpoint's tensors into temp_dir()/name: `edit` may change a spec or drop it (false);
// `extra` tensors (fp32 values) are appended; `reverse` writes the keys in reverse order.
std::string rewrite_checkpoint(const std::string& src, const std::string& name, const std::function<bool(PthTensorSpec&)>& edit,
                               const std::vector<std::pair<std::string, std::vector<int64_t>>>& extra_shapes = {},
                               const std::vector<std::vector<float>>& extra_values = {}, bool reverse = false);

// Generation from a fresh state on the in-process engine.
GenerateResult generate_fresh(Engine& m, const Tokenizer& tok, const GenerateRequest& req,
                              const std::function<void(std::string_view)>& on_text = {});

ModeOutputs run_modes(Engine& m, const std::vector<int32_t>& tokens, const std::vector<int>& chunks);

}  // namespace skein::test
