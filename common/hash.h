// Small, dependency-free hashes: FNV-1a 64 for fingerprints and state-file checksums, splitmix64 for
// reproducible random weights.
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

// splitmix64's k-th output after seeding with `base`: counter-based, so values are drawn in parallel
// (or out of order) and still equal the sequential stream.
inline uint64_t splitmix_at(uint64_t base, uint64_t k) {
  uint64_t z = base + (k + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace skein
