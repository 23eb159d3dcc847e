// Load-time conversions of weight matrices: to another float dtype, or to the official uint8 scheme.
#pragma once
#include <memory>

#include "common/matrix.h"

namespace skein {

// The matrix as fp32, [rows][cols].
std::unique_ptr<float[]> matrix_to_f32(const Matrix& m);

// A copy in `dtype` (fp32, fp16 or bf16; rounding to nearest even).
Matrix convert_matrix(const Matrix& m, DType dtype);

// Quantizes exactly as the official loader does for `*i8` strategies (operation order included, so the
// same uint8 values come out). The scales and offsets are rounded to `param_dtype` (the strategy's
// activation dtype) and kept as fp32.
Matrix quantize_i8(const Matrix& m, DType param_dtype);

}  // namespace skein
