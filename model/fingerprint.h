// A model fingerprint: identifies the weights a state belongs to without reading the whole file.
#pragma once
#include <cstdint>
#include <string>

#include "model/checkpoint.h"

namespace skein {

// Hashes every tensor's name, dtype and shape, all bytes of the small tensors (vectors, LoRA factors) and
// the first 4 KiB of every large one. Two checkpoints that differ in any trained vector or in the start of
// any matrix differ here.
uint64_t model_fingerprint(const Checkpoint& ck);

std::string fingerprint_hex(uint64_t f);

}  // namespace skein
