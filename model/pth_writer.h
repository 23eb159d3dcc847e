// Writes checkpoints in the official torch.save layout: an uncompressed zip (zip64 when large) holding
// <stem>/data.pkl (a protocol-2 pickle of an OrderedDict of tensors), one <stem>/data/<n> member per
// tensor storage (64-byte aligned, as torch aligns them), <stem>/byteorder and <stem>/version.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace skein {

struct PthTensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  size_t nbytes() const;
};

// fill(i, out) writes tensor i's bytes (out is already sized). Tensors are produced one at a time, so
// memory stays at one tensor even for multi-GB checkpoints. Writes to a temporary file, then renames.
void write_pth(const std::string& path, const std::vector<PthTensorSpec>& tensors,
               const std::function<void(size_t, std::vector<uint8_t>&)>& fill);

// A plain stored zip of named members (what write_pth builds on); tests use it to craft bad archives.
void write_stored_zip(const std::string& path, const std::vector<std::pair<std::string, std::string>>& members);

}  // namespace skein
