// Random-weight checkpoints in the official layout at any shape: the demo default and the benchmark
// models (0.1B, 1.5B, 7B shapes) come from here, so no download is ever needed to run Skein.
#pragma once
#include <cstdint>
#include <string>

#include "common/dtype.h"
#include "model/architecture.h"

namespace skein {

struct MakeModelOptions {
  Arch arch = Arch::V7;  // V4, V5_2, V6 or V7
  int n_layer = 2;
  int n_embd = 64;
  int vocab = 256;
  int dim_ffn = 0;       // 0: the generation's usual width (4C; v6 3.5C rounded to 32)
  int head_size = 64;
  uint64_t seed = 0;
  DType dtype = DType::BF16;
};

// Writes the checkpoint; returns the number of parameters.
uint64_t make_model(const MakeModelOptions& o, const std::string& path);

// "v4", "v5.2", "v6", "v7" -> Arch (throws on others).
Arch parse_make_model_arch(const std::string& s);

}  // namespace skein
