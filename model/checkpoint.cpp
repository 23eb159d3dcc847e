#include "model/checkpoint.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/json_text.h"
#include "model/torch_pickle.h"
#include "model/zip_archive.h"

namespace skein {

std::string shape_text(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string TensorRef::shape_str() const { return shape_text(shape); }

std::shared_ptr<const Checkpoint> Checkpoint::open(const std::string& path) {
  auto ck = std::shared_ptr<Checkpoint>(new Checkpoint(std::make_shared<const MappedFile>(path)));
  const uint8_t* d = ck->file_->data();
  size_t n = ck->file_->size();
  if (n >= 4 && d[0] == 'P' && d[1] == 'K') {
    ck->format_ = "pth";
    ck->load_torch_zip();
  } else if (n >= 9 && d[8] == '{') {
    ck->format_ = "safetensors";
    ck->load_safetensors();
  } else {
    fail(path, ": unrecognised file format (expected a torch .pth zip archive or .safetensors)");
  }
  if (ck->tensors_.empty()) fail(path, ": checkpoint holds no tensors");
  return ck;
}

std::shared_ptr<const Checkpoint> Checkpoint::merged(const Checkpoint& base, const Checkpoint& extra) {
  auto ck = std::shared_ptr<Checkpoint>(new Checkpoint(base.file_));
  ck->format_ = base.format_;
  ck->tensors_ = base.tensors_;
  ck->extra_files_ = base.extra_files_;
  ck->extra_files_.push_back(extra.file_);
  ck->extra_files_.insert(ck->extra_files_.end(), extra.extra_files_.begin(), extra.extra_files_.end());
  for (auto& [name, t] : extra.tensors_)
    if (!ck->tensors_.emplace(name, t).second) fail(extra.path(), ": tensor '", name, "' is also in ", base.path());
  return ck;
}

const TensorRef& Checkpoint::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(path(), ": missing tensor '", name, "'");
  return it->second;
}

void Checkpoint::add(TensorRef t) {
  for (auto d : t.shape)
    if (d < 0 || d > (int64_t(1) << 40)) fail(path(), ": tensor '", t.name, "' has an invalid shape");
  if (uint64_t(t.numel()) * dtype_size(t.dtype) != t.nbytes) fail(path(), ": tensor '", t.name, "' size does not match its shape");
  std::string name = t.name;
  if (!tensors_.emplace(name, std::move(t)).second) fail(path(), ": duplicate tensor '", name, "'");
}

void Checkpoint::load_torch_zip() {
  const uint8_t* base = file_->data();
  auto index = read_zip_index(base, file_->size(), path());
  std::string prefix;
  for (auto& [name, m] : index) {
    if (name.size() >= 8 && name.compare(name.size() - 8, 8, "data.pkl") == 0 &&
        (name.size() == 8 || name[name.size() - 9] == '/')) {
      prefix = name.substr(0, name.size() - 8);
      break;
    }
  }
  auto pkl = index.find(prefix + "data.pkl");
  if (pkl == index.end()) fail(path(), ": zip archive has no data.pkl (not a torch checkpoint)");
  auto pickled = read_state_dict_pickle(base + pkl->second.offset, pkl->second.size, path());
  for (auto& p : pickled) {
    auto m = index.find(prefix + "data/" + p.storage_key);
    if (m == index.end()) fail(path(), ": tensor '", p.name, "' refers to missing storage data/", p.storage_key);
    size_t es = dtype_size(p.dtype);
    if (m->second.size < p.storage_numel * es) fail(path(), ": storage data/", p.storage_key, " is shorter than declared (truncated)");
    TensorRef t;
    t.name = p.name;
    t.dtype = p.dtype;
    t.shape = p.shape;
    // Only C-contiguous tensors are accepted (every official checkpoint is); size-1 dims have any stride.
    int64_t expect = 1;
    for (size_t i = p.shape.size(); i-- > 0;) {
      if (p.shape[i] != 1 && p.stride[i] != expect) fail(path(), ": tensor '", p.name, "' is not contiguous");
      expect *= p.shape[i];
    }
    uint64_t numel = uint64_t(t.numel());
    if (p.storage_offset + numel > p.storage_numel) fail(path(), ": tensor '", p.name, "' lies outside its storage");
    t.data = base + m->second.offset + p.storage_offset * es;
    t.nbytes = numel * es;
    add(std::move(t));
  }
}

void Checkpoint::load_safetensors() {
  const uint8_t* base = file_->data();
  uint64_t n = file_->size();
  uint64_t hlen = 0;
  for (int k = 0; k < 8; ++k) hlen |= uint64_t(base[k]) << (8 * k);
  if (hlen > n - 8) fail(path(), ": safetensors header length ", hlen, " exceeds the file size (truncated?)");
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(base + 8, base + 8 + hlen);
  } catch (const nlohmann::json::exception& e) {
    fail(path(), ": safetensors header is not valid JSON (", json_parse_failure(e), ")");
  }
  if (!h.is_object()) fail(path(), ": safetensors header is not a JSON object");
  uint64_t data_base = 8 + hlen;
  for (auto& [name, v] : h.items()) {
    if (name == "__metadata__") continue;
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail(path(), ": safetensors entry '", name, "' lacks dtype, shape or data_offsets");
    TensorRef t;
    t.name = name;
    std::string dt = v["dtype"].is_string() ? v["dtype"].get<std::string>() : "";
    if (dt == "F32") t.dtype = DType::F32;
    else if (dt == "F16") t.dtype = DType::F16;
    else if (dt == "BF16") t.dtype = DType::BF16;
    else if (dt == "U8") t.dtype = DType::U8;
    else fail(path(), ": tensor '", name, "' has unsupported dtype '", dt, "'");
    auto& off = v["data_offsets"];
    if (!v["shape"].is_array() || !off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(path(), ": safetensors entry '", name, "' is malformed");
    for (auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) fail(path(), ": tensor '", name, "' has an invalid shape");
      t.shape.push_back(d.get<int64_t>());
    }
    uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (e < b || e > n - data_base) fail(path(), ": tensor '", name, "' data lies outside the file (truncated?)");
    t.data = base + data_base + b;
    t.nbytes = e - b;
    add(std::move(t));
  }
}

}  // namespace skein
