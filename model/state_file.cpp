#include "model/state_file.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/hash.h"
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

void save_state_file(const std::string& path, const StateFileHeader& h, const std::vector<float>& data) {
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
  Fnv64 sum;
  sum.update(&r, sizeof r);
  sum.update(data.data(), data.size() * sizeof(float));
  uint64_t checksum = sum.digest();

  write_file_atomically(path, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail(path, ": cannot write state file");
    f.write(reinterpret_cast<const char*>(&r), sizeof r);
    f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size() * sizeof(float)));
    f.write(reinterpret_cast<const char*>(&checksum), sizeof checksum);
    f.flush();
    if (!f) fail(path, ": write failed (disk full?)");
  });
}

std::vector<float> load_state_file(const std::string& path, const StateFileHeader& expect) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open state file");
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (bytes.size() < sizeof(RawHeader) + 8) fail(path, ": not a Skein state file (too short)");
  RawHeader r;
  std::memcpy(&r, bytes.data(), sizeof r);
  if (std::memcmp(r.magic, kMagic, 8) != 0) fail(path, ": not a Skein state file (bad magic)");
  if (r.version != kFormatVersion) fail(path, ": state file format version ", r.version, " is not supported (expected ", kFormatVersion, ")");
  if (r.n_floats > (bytes.size() - sizeof r - 8) / sizeof(float) || sizeof r + r.n_floats * sizeof(float) + 8 != bytes.size())
    fail(path, ": state file is truncated or has trailing bytes");
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  Fnv64 sum;
  sum.update(bytes.data(), bytes.size() - 8);
  if (sum.digest() != stored) fail(path, ": state file checksum mismatch (corrupted)");

  const ModelDims& d = expect.dims;
  if (r.arch != uint32_t(d.arch) || r.n_layer != d.n_layer || r.n_embd != d.n_embd || r.n_head != d.n_head ||
      r.head_size != d.head_size || r.vocab != d.vocab)
    fail(path, ": state belongs to a different model architecture (", arch_name(Arch(r.arch)), " L", r.n_layer, " C", r.n_embd,
         "), this model is ", arch_name(d.arch), " L", d.n_layer, " C", d.n_embd);
  if (r.fingerprint != expect.fingerprint)
    fail(path, ": state belongs to another model (fingerprint ", fingerprint_hex(r.fingerprint), ", this model ",
         fingerprint_hex(expect.fingerprint), ")");
  if (r.first_layer != expect.first_layer || r.last_layer != expect.last_layer)
    fail(path, ": state covers layers ", r.first_layer, "..", r.last_layer - 1, ", expected ", expect.first_layer, "..",
         expect.last_layer - 1);
  if (r.n_floats != d.state_floats_per_layer() * size_t(r.last_layer - r.first_layer))
    fail(path, ": state holds ", r.n_floats, " values, expected ", d.state_floats_per_layer() * size_t(r.last_layer - r.first_layer));
  std::vector<float> data(r.n_floats);
  std::memcpy(data.data(), bytes.data() + sizeof r, r.n_floats * sizeof(float));
  return data;
}

}  // namespace skein
