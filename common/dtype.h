// Element types of stored tensors.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace skein {

enum class DType : uint8_t { F32, F16, BF16, U8 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::U8: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "fp32";
    case DType::F16: return "fp16";
    case DType::BF16: return "bf16";
    case DType::U8: return "u8";
  }
  return "?";
}

}  // namespace skein
