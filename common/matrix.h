// Weight containers shared by the model loader and the compute backends.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "common/dtype.h"

namespace skein {

using Vector = std::vector<float>;

// The official uint8 scheme (rwkv `fp16i8`/`fp32i8`): w[o][i] = ((q[o][i] + 0.5) * ry[i]) * rx[o] + my[i] + mx[o].
struct QuantParams {
  Vector mx, rx;  // per output row
  Vector my, ry;  // per input column
};

// n bytes left uninitialised: a load fills every byte of a converted matrix in parallel, where a zeroed
// vector would first page in and clear gigabytes on one thread.
inline std::shared_ptr<uint8_t[]> uninitialized_bytes(size_t n) { return std::shared_ptr<uint8_t[]>(new uint8_t[n]); }

// A weight matrix for y = W·x, stored row-major as [rows = outputs][cols = inputs].
struct Matrix {
  DType dtype = DType::F32;  // U8: quantized, see `quant`
  int64_t rows = 0, cols = 0;
  const uint8_t* data = nullptr;
  std::shared_ptr<const void> owned;  // keeps `data` alive when the load converted or reordered it
  std::shared_ptr<const QuantParams> quant;
  size_t nbytes() const {
    size_t n = size_t(rows) * size_t(cols) * dtype_size(dtype);
    if (quant) n += 2 * sizeof(float) * size_t(rows + cols);
    return n;
  }
};

}  // namespace skein
