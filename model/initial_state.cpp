#include "model/initial_state.h"

#include <vector>

#include "common/error.h"
#include "model/architecture.h"
#include "model/weights.h"

namespace skein {

namespace {

// The state-tuning file, opened and checked against the model `d` describes.
std::shared_ptr<const Checkpoint> open_for(const ModelDims& d, const std::string& state_path) {
  if (d.arch == Arch::V4) fail(state_path, ": RWKV-4 models have no tuned initial state (v5, v6 and v7 do)");
  auto states = Checkpoint::open(state_path);
  const std::vector<int64_t> shape = {d.n_head, d.head_size, d.head_size};
  const std::string expected = "blocks.0-" + std::to_string(d.n_layer - 1) + ".att.time_state";
  std::vector<bool> seen(size_t(d.n_layer), false);
  for (auto& [name, t] : states->tensors()) {
    // "blocks.<layer>.att.time_state", the layer in decimal without leading zeros.
    const std::string head = "blocks.", tail = ".att.time_state";
    int layer = -1;
    if (name.size() > head.size() + tail.size() && name.rfind(head, 0) == 0 && name.compare(name.size() - tail.size(), tail.size(), tail) == 0) {
      const std::string digits = name.substr(head.size(), name.size() - head.size() - tail.size());
      if (digits.size() <= 6 && digits.find_first_not_of("0123456789") == std::string::npos && (digits == "0" || digits[0] != '0'))
        layer = std::stoi(digits);
    }
    if (layer < 0 || layer >= d.n_layer)
      fail(state_path, ": tensor '", name.substr(0, 100), "' is not an initial state of this model's layers (expected ", expected, ")");
    if (t.dtype == DType::U8) fail(state_path, ": tensor '", name, "' is u8; initial states are fp32, fp16 or bf16");
    if (t.shape != shape) fail(state_path, ": tensor '", name, "' has shape ", t.shape_str(), "; this model's heads need ", shape_text(shape));
    seen[size_t(layer)] = true;
  }
  for (int l = 0; l < d.n_layer; ++l)
    if (!seen[size_t(l)])
      fail(state_path, ": no initial state for layer ", l, " (blocks.", l, ".att.time_state): a state-tuning file holds one for every one of the model's ", d.n_layer, " layers");
  return states;
}

}  // namespace

std::shared_ptr<const Checkpoint> attach_initial_state(const Checkpoint& model, const std::string& state_path) {
  const ModelDims d = detect_architecture(model);
  if (d.has_time_state && d.arch != Arch::V4)
    fail(state_path, ": ", model.path(), " already holds tuned initial states (blocks.N.att.time_state): use the model alone");
  return Checkpoint::merged(model, *open_for(d, state_path));
}

std::vector<float> tuned_start_state(const Checkpoint& model, const std::string& state_path) {
  const ModelDims d = detect_architecture(model);
  auto states = open_for(d, state_path);
  const size_t C = size_t(d.n_embd), per = d.state_floats_per_layer();
  std::vector<float> s(d.state_floats(), 0.0f);
  for (int l = 0; l < d.n_layer; ++l) {
    const Vector wkv = initial_wkv_state(*states, d, l);
    std::copy(wkv.begin(), wkv.end(), s.begin() + long(size_t(l) * per + C));
  }
  return s;
}

}  // namespace skein
