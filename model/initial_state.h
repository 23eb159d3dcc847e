// State-tuning files. RWKV's state tuning trains only the initial wkv state of every layer and publishes
// it as a small .pth (or .safetensors) of blocks.N.att.time_state [heads x head_size x head_size], meant to
// sit beside the unchanged model. Attached to the model, it makes the model what the official package
// runs when those tensors are merged into the checkpoint: every new sequence starts from them
// (model/weights.cpp reads them; v5/v6 store them transposed). Same tensors, so the same fingerprint as
// the merged file.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/checkpoint.h"

namespace skein {

// The model with the state file's initial states merged in. Errors name the state file and what does not
// fit: a tensor that is not a layer's time_state, a shape other than the model's heads, a layer left
// out, a v4 model (it has no wkv matrix state) or a model that already holds tuned states.
std::shared_ptr<const Checkpoint> attach_initial_state(const Checkpoint& model, const std::string& state_path);

// The whole state a sequence starts from with the state file's initial states instead of the model's own
// (official state layout, what state files and ModelHandle::import_state hold): how a server offers
// several tuned states of one loaded model, chosen per request. Errors as attach_initial_state's; a model
// that holds tuned states of its own is fine (these replace them).
std::vector<float> tuned_start_state(const Checkpoint& model, const std::string& state_path);

}  // namespace skein
