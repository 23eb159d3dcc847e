// Which RWKV generation a checkpoint is, and its dimensions, inferred from tensor names and shapes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/checkpoint.h"

namespace skein {

enum class Arch : uint8_t { V4 = 1, V5_0, V5_1, V5_2, V6, V7 };

const char* arch_name(Arch a);  // "v4", "v5.0", ... as the official package names versions

struct ModelDims {
  Arch arch = Arch::V4;
  int n_layer = 0;
  int n_embd = 0;
  int n_head = 1;     // v4: 1 (no heads)
  int head_size = 0;  // v4: n_embd
  int vocab = 0;
  int dim_ffn = 0;
  bool has_time_state = false;  // state-tuned checkpoint: initial wkv state per layer

  // State of one layer in the official list order (see state.h).
  size_t state_floats_per_layer() const;
  size_t state_floats() const { return state_floats_per_layer() * size_t(n_layer); }
};

// Throws skein::Error("<path>: ...") when the file is no RWKV checkpoint Skein knows.
ModelDims detect_architecture(const Checkpoint& ck);

}  // namespace skein
