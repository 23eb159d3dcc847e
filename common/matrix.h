// Weight containers shared by the model loader and the compute backends.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "common/dtype.h"

namespace skein {

// A weight matrix for y = W·x, stored row-major as [rows = outputs][cols = inputs].
struct Matrix {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  const uint8_t* data = nullptr;
  std::shared_ptr<std::vector<uint8_t>> owned;  // set when the load had to reorder the data
  size_t nbytes() const { return size_t(rows) * size_t(cols) * dtype_size(dtype); }
};

using Vector = std::vector<float>;

}  // namespace skein
