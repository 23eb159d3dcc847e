#include "model/state_file.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/hash.h"
#include "common/refuse_folder.h"
#include "model/fingerprint.h"

namespace skein {
namespace {

constexpr char kMagic[8] = {'S', 'K', 'E', 'I', 'N', 'S', 'T', '\0'};
constexpr uint32_t kFormatVersion = 1;

struct RawHeader {
  char magic[8];
  uint32_t version;
  uint32_t arch;
  int32_t n_layer, n_embd, n_head, head_size, vocab;
  int32_t first_layer, last_layer;
  uint64_t fingerprint;
  uint64_t n_floats;
};
static_assert(sizeof(RawHeader) == 64);

}  // namespace

std::string encode_state_file(const StateFileHeader& h, const std::vector<float>& data) {
  RawHeader r{};
  std::memcpy(r.magic, kMagic, 8);
  r.version = kFormatVersion;
  r.arch = uint32_t(h.dims.arch);
  r.n_layer = h.dims.n_layer;
  r.n_embd = h.dims.n_embd;
  r.n_head = h.dims.n_head;
  r.head_size = h.dims.head_size;
  r.vocab = h.dims.vocab;
  r.first_layer = h.first_layer;
  r.last_layer = h.last_layer;
  r.fingerprint = h.fingerprint;
  r.n_floats = data.size();
  std::string bytes(sizeof r + data.size() * sizeof(float) + 8, '\0');
  std::memcpy(bytes.data(), &r, sizeof r);
  std::memcpy(bytes.data() + sizeof r, data.data(), data.size() * sizeof(float));
  Fnv64 sum;
  sum.update(bytes.data(), bytes.size() - 8);
  const uint64_t checksum = sum.digest();
  std::memcpy(bytes.data() + bytes.size() - 8, &checksum, 8);
  return bytes;
}

size_t state_file_bytes(const StateFileHeader& h) {
  return sizeof(RawHeader) + h.dims.state_floats_per_layer() * size_t(h.last_layer - h.first_layer) * sizeof(float) + 8;
}

uint64_t save_state_file(const std::string& path, const StateFileHeader& h, const std::vector<float>& data) {
  const std::string bytes = encode_state_file(h, data);
  write_file_atomically(path, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail(path, ": cannot write state file");
    f.write(bytes.data(), std::streamsize(bytes.size()));
    f.flush();
    if (!f) fail(path, ": write failed (disk full?)");
  });
  uint64_t checksum;
  std::memcpy(&checksum, bytes.data() + bytes.size() - 8, 8);
  return checksum;
}

uint64_t stored_state_checksum(const std::string& path) {
  refuse_folder(path);
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(path, ": cannot open state file");
  const std::streamoff size = f.tellg();
  if (size < std::streamoff(sizeof(RawHeader) + 8)) fail(path, ": not a Skein state file (too short)");
  uint64_t checksum = 0;
  f.seekg(size - 8);
  f.read(reinterpret_cast<char*>(&checksum), 8);
  if (!f) fail(path, ": cannot read state file");
  return checksum;
}

bool is_state_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return false;
  char magic[sizeof kMagic] = {};
  std::ifstream f(path, std::ios::binary);
  return f.read(magic, sizeof magic) && std::memcmp(magic, kMagic, sizeof magic) == 0;
}

std::vector<float> load_state_file(const std::string& path, const StateFileHeader& expect) {
  refuse_folder(path);
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open state file");
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return decode_state_file(bytes, expect, path);
}

std::vector<float> decode_state_file(std::string_view bytes, const StateFileHeader& expect, const std::string& where) {
  if (bytes.size() < sizeof(RawHeader) + 8) fail(where, ": not a Skein state file (too short)");
  RawHeader r;
  std::memcpy(&r, bytes.data(), sizeof r);
  if (std::memcmp(r.magic, kMagic, 8) != 0) fail(where, ": not a Skein state file (bad magic)");
  if (r.version != kFormatVersion) fail(where, ": state file format version ", r.version, " is not supported (expected ", kFormatVersion, ")");
  if (r.n_floats > (bytes.size() - sizeof r - 8) / sizeof(float) || sizeof r + r.n_floats * sizeof(float) + 8 != bytes.size())
    fail(where, ": state file is truncated or has trailing bytes");
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  Fnv64 sum;
  sum.update(bytes.data(), bytes.size() - 8);
  if (sum.digest() != stored) fail(where, ": state file checksum mismatch (corrupted)");

  const ModelDims& d = expect.dims;
  if (r.arch != uint32_t(d.arch) || r.n_layer != d.n_layer || r.n_embd != d.n_embd || r.n_head != d.n_head ||
      r.head_size != d.head_size || r.vocab != d.vocab)
    fail(where, ": state belongs to a different model architecture (", arch_name(Arch(r.arch)), " L", r.n_layer, " C", r.n_embd,
         "), this model is ", arch_name(d.arch), " L", d.n_layer, " C", d.n_embd);
  if (r.fingerprint != expect.fingerprint)
    fail(where, ": state belongs to another model (fingerprint ", fingerprint_hex(r.fingerprint), ", this model ",
         fingerprint_hex(expect.fingerprint), ")");
  if (r.first_layer != expect.first_layer || r.last_layer != expect.last_layer)
    fail(where, ": state covers layers ", r.first_layer, "..", r.last_layer - 1, ", expected ", expect.first_layer, "..",
         expect.last_layer - 1);
  if (r.n_floats != d.state_floats_per_layer() * size_t(r.last_layer - r.first_layer))
    fail(where, ": state holds ", r.n_floats, " values, expected ", d.state_floats_per_layer() * size_t(r.last_layer - r.first_layer));
  std::vector<float> data(r.n_floats);
  std::memcpy(data.data(), bytes.data() + sizeof r, r.n_floats * sizeof(float));
  // The checksum proves the bytes are as written, not that a writer was sound: a NaN would spread
  // through every later token of the session.
  for (size_t i = 0; i < data.size(); ++i)
    if (!std::isfinite(data[i])) fail(where, ": state value ", i, " is ", std::isnan(data[i]) ? "nan" : "infinite", " (a state holds finite numbers only)");
  return data;
}

}  // namespace skein
