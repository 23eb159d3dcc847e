// A read-only memory map of a whole file. Weights are used in place from the map, so loading a model
// costs page faults on first use, not a copy.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace skein {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  void release(const uint8_t* p, size_t n) const;  // madvise(DONTNEED) on the whole pages inside [p, p+n)

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace skein
