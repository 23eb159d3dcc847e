#include "model/pth_writer.h"

#include <zlib.h>

#include <cstdio>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/atomic_file.h"
#include "common/error.h"

namespace skein {

size_t PthTensorSpec::nbytes() const {
  size_t n = dtype_size(dtype);
  for (auto d : shape) n *= size_t(d);
  return n;
}

namespace {

void put16(std::string& s, uint16_t v) { s += char(v & 0xff); s += char(v >> 8); }
void put32(std::string& s, uint32_t v) { for (int i = 0; i < 4; ++i) s += char((v >> (8 * i)) & 0xff); }
void put64(std::string& s, uint64_t v) { for (int i = 0; i < 8; ++i) s += char((v >> (8 * i)) & 0xff); }

// ---- pickle (protocol 2), only the opcodes torch.load needs for a dict of tensors
void p_str(std::string& p, const std::string& s) { p += 'X'; put32(p, uint32_t(s.size())); p += s; }
void p_int(std::string& p, int64_t v) {
  if (v >= 0 && v < 256) { p += 'K'; p += char(v); }
  else if (v >= INT32_MIN && v <= INT32_MAX) { p += 'J'; put32(p, uint32_t(int32_t(v))); }
  else { p += '\x8a'; p += char(8); put64(p, uint64_t(v)); }
}
void p_global(std::string& p, const char* mod, const char* name) { p += 'c'; p += mod; p += '\n'; p += name; p += '\n'; }

const char* storage_name(DType t) {
  switch (t) {
    case DType::F32: return "FloatStorage";
    case DType::F16: return "HalfStorage";
    case DType::BF16: return "BFloat16Storage";
    case DType::U8: return "ByteStorage";
  }
  return "";
}

std::string make_pickle(const std::vector<PthTensorSpec>& tensors) {
  std::string p = "\x80\x02";
  p_global(p, "collections", "OrderedDict");
  p += ')';
  p += 'R';
  p += '(';
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    p_str(p, t.name);
    p_global(p, "torch._utils", "_rebuild_tensor_v2");
    p += '(';
    // persistent id: ('storage', torch.XStorage, key, 'cpu', numel)
    p += '(';
    p_str(p, "storage");
    p_global(p, "torch", storage_name(t.dtype));
    p_str(p, std::to_string(i));
    p_str(p, "cpu");
    int64_t numel = 1;
    for (auto d : t.shape) numel *= d;
    p_int(p, numel);
    p += 't';
    p += 'Q';
    p_int(p, 0);  // storage offset
    p += '(';
    for (auto d : t.shape) p_int(p, d);
    p += 't';
    p += '(';
    int64_t stride = 1;
    std::vector<int64_t> strides(t.shape.size());
    for (size_t k = t.shape.size(); k-- > 0;) { strides[k] = stride; stride *= t.shape[k]; }
    for (auto s : strides) p_int(p, s);
    p += 't';
    p += '\x89';  // requires_grad False
    p_global(p, "collections", "OrderedDict");
    p += ')';
    p += 'R';     // backward hooks
    p += 't';
    p += 'R';
  }
  p += 'u';
  p += '.';
  return p;
}

struct CentralEntry {
  std::string name;
  uint32_t crc;
  uint64_t size;
  uint64_t offset;
};

class ZipWriter {
 public:
  explicit ZipWriter(const std::string& path) : path_(path), f_(path, std::ios::binary | std::ios::trunc) {
    if (!f_) fail(path, ": cannot create file: ", std::strerror(errno));
  }

  void add(const std::string& name, const uint8_t* data, uint64_t size) {
    uint32_t crc = uint32_t(crc32_z(0L, data, size));
    bool z64 = size >= 0xFFFFFFFFull || pos_ >= 0xFFFFFFFFull;
    std::string h;
    put32(h, 0x04034b50);
    put16(h, z64 ? 45 : 20);
    put16(h, 0);  // flags
    put16(h, 0);  // stored
    put16(h, 0); put16(h, 0);  // time, date
    put32(h, crc);
    put32(h, z64 ? 0xFFFFFFFFu : uint32_t(size));
    put32(h, z64 ? 0xFFFFFFFFu : uint32_t(size));
    put16(h, uint16_t(name.size()));
    std::string extra;
    if (z64) { put16(extra, 0x0001); put16(extra, 16); put64(extra, size); put64(extra, size); }
    // Pad with an unknown extra field so the data starts 64-byte aligned, as torch does.
    size_t base = pos_ + 30 + name.size() + extra.size() + 4;
    size_t pad = (64 - base % 64) % 64;
    put16(extra, 0x4246);
    put16(extra, uint16_t(pad));
    extra.append(pad, 'Z');
    put16(h, uint16_t(extra.size()));
    h += name;
    h += extra;
    entries_.push_back({name, crc, size, pos_});
    write(h.data(), h.size());
    write(data, size);
  }

  void finish() {
    uint64_t cd_start = pos_;
    for (auto& e : entries_) {
      bool z64 = e.size >= 0xFFFFFFFFull || e.offset >= 0xFFFFFFFFull;
      std::string c;
      put32(c, 0x02014b50);
      put16(c, 45);  // made by
      put16(c, z64 ? 45 : 20);
      put16(c, 0); put16(c, 0); put16(c, 0); put16(c, 0);
      put32(c, e.crc);
      put32(c, z64 ? 0xFFFFFFFFu : uint32_t(e.size));
      put32(c, z64 ? 0xFFFFFFFFu : uint32_t(e.size));
      put16(c, uint16_t(e.name.size()));
      std::string extra;
      if (z64) { put16(extra, 0x0001); put16(extra, 24); put64(extra, e.size); put64(extra, e.size); put64(extra, e.offset); }
      put16(c, uint16_t(extra.size()));
      put16(c, 0); put16(c, 0); put16(c, 0); put32(c, 0);
      put32(c, z64 ? 0xFFFFFFFFu : uint32_t(e.offset));
      c += e.name;
      c += extra;
      write(c.data(), c.size());
    }
    uint64_t cd_size = pos_ - cd_start, n = entries_.size();
    std::string t;
    uint64_t e64 = pos_;
    put32(t, 0x06064b50); put64(t, 44); put16(t, 45); put16(t, 45); put32(t, 0); put32(t, 0);
    put64(t, n); put64(t, n); put64(t, cd_size); put64(t, cd_start);
    put32(t, 0x07064b50); put32(t, 0); put64(t, e64); put32(t, 1);
    put32(t, 0x06054b50); put16(t, 0); put16(t, 0);
    put16(t, uint16_t(std::min<uint64_t>(n, 0xFFFF))); put16(t, uint16_t(std::min<uint64_t>(n, 0xFFFF)));
    put32(t, uint32_t(std::min<uint64_t>(cd_size, 0xFFFFFFFF))); put32(t, uint32_t(std::min<uint64_t>(cd_start, 0xFFFFFFFF)));
    put16(t, 0);
    write(t.data(), t.size());
    f_.flush();
    if (!f_) fail(path_, ": write failed (disk full?)");
    f_.close();
  }

 private:
  void write(const void* p, size_t n) {
    f_.write(static_cast<const char*>(p), std::streamsize(n));
    if (!f_) fail(path_, ": write failed (disk full?)");
    pos_ += n;
  }
  std::string path_;
  std::ofstream f_;
  uint64_t pos_ = 0;
  std::vector<CentralEntry> entries_;
};

}  // namespace

void write_stored_zip(const std::string& path, const std::vector<std::pair<std::string, std::string>>& members) {
  ZipWriter z(path);
  for (auto& [name, bytes] : members) z.add(name, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  z.finish();
}

void write_pth(const std::string& path, const std::vector<PthTensorSpec>& tensors,
               const std::function<void(size_t, std::vector<uint8_t>&)>& fill) {
  std::string stem = path;
  if (auto s = stem.find_last_of('/'); s != std::string::npos) stem = stem.substr(s + 1);
  if (auto d = stem.find_last_of('.'); d != std::string::npos && d > 0) stem = stem.substr(0, d);
  if (stem.empty()) stem = "archive";
  write_file_atomically(path, [&](const std::string& tmp) {
    ZipWriter z(tmp);
    std::string pkl = make_pickle(tensors);
    z.add(stem + "/data.pkl", reinterpret_cast<const uint8_t*>(pkl.data()), pkl.size());
    const std::string order = "little";
    z.add(stem + "/byteorder", reinterpret_cast<const uint8_t*>(order.data()), order.size());
    std::vector<uint8_t> buf;
    for (size_t i = 0; i < tensors.size(); ++i) {
      buf.assign(tensors[i].nbytes(), 0);
      fill(i, buf);
      z.add(stem + "/data/" + std::to_string(i), buf.data(), buf.size());
    }
    const std::string version = "3\n";
    z.add(stem + "/version", reinterpret_cast<const uint8_t*>(version.data()), version.size());
    z.finish();
  });
}

}  // namespace skein
