// FNV-1a 64: a small, dependency-free hash for fingerprints and state-file checksums.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace skein {

class Fnv64 {
 public:
  void update(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h_ = (h_ ^ p[i]) * 0x100000001b3ull;
  }
  void update(std::string_view s) { update(s.data(), s.size()); }
  template <typename T>
  void update_value(const T& v) { update(&v, sizeof(v)); }
  uint64_t digest() const { return h_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ull;
};

}  // namespace skein
