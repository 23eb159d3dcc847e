// A checkpoint file opened for reading: the official torch zip (.pth) or .safetensors, mapped in memory.
// Tensors are views into the map; no weight byte is read until it is used.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "model/mapped_file.h"

namespace skein {

struct TensorRef {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // C-contiguous, possibly unaligned
  uint64_t nbytes = 0;

  int64_t numel() const { int64_t n = 1; for (auto d : shape) n *= d; return n; }
  std::string shape_str() const;
};

// "[2,3]": how errors print a shape.
std::string shape_text(std::span<const int64_t> shape);

class Checkpoint {
 public:
  // Detects the format from the file's first bytes. Throws skein::Error("<path>: <problem>").
  static std::shared_ptr<const Checkpoint> open(const std::string& path);
  // `base` with `extra`'s tensors beside its own, as if one file held both (a state-tuning file beside
  // its model: model/initial_state.h); `extra` stays mapped while the result lives. Throws on a name
  // both hold.
  static std::shared_ptr<const Checkpoint> merged(const Checkpoint& base, const Checkpoint& extra);

  const std::string& path() const { return file_->path(); }
  const std::string& format() const { return format_; }
  uint64_t file_size() const { return file_->size(); }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorRef& get(const std::string& name) const;  // throws "missing tensor"
  const std::map<std::string, TensorRef>& tensors() const { return tensors_; }
  // Drops the tensor's pages from this process's memory; the next use reads them from the file again.
  void release(const TensorRef& t) const { file_->release(t.data, t.nbytes); }  // by address: merged files too

 private:
  explicit Checkpoint(std::shared_ptr<const MappedFile> f) : file_(std::move(f)) {}
  void load_torch_zip();
  void load_safetensors();
  void add(TensorRef t);

  std::shared_ptr<const MappedFile> file_;
  std::vector<std::shared_ptr<const MappedFile>> extra_files_;  // merged in; their tensors point into them
  std::string format_;
  std::map<std::string, TensorRef> tensors_;
};

}  // namespace skein
