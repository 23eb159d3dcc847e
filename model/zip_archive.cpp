#include "model/zip_archive.h"

#include <cstring>

#include "common/error.h"

namespace skein {
namespace {

uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24); }
uint64_t rd64(const uint8_t* p) { return uint64_t(rd32(p)) | (uint64_t(rd32(p + 4)) << 32); }

constexpr uint32_t kEocd = 0x06054b50, kEocd64 = 0x06064b50, kEocd64Locator = 0x07064b50;
constexpr uint32_t kCentral = 0x02014b50, kLocal = 0x04034b50;

}  // namespace

std::map<std::string, ZipMember> read_zip_index(const uint8_t* data, uint64_t size, const std::string& label) {
  if (size < 22) fail(label, ": not a zip archive (too short)");
  // The end-of-central-directory record sits in the last 64 KiB + 22 bytes (comment up to 64 KiB).
  int64_t eocd = -1;
  uint64_t lowest = size > 65557 ? size - 65557 : 0;
  for (uint64_t i = size - 22 + 1; i-- > lowest;) {
    if (rd32(data + i) == kEocd) { eocd = int64_t(i); break; }
  }
  if (eocd < 0) fail(label, ": no zip end-of-central-directory record (truncated or not a zip archive)");
  uint64_t n_entries = rd16(data + eocd + 10);
  uint64_t cd_size = rd32(data + eocd + 12);
  uint64_t cd_offset = rd32(data + eocd + 16);
  if (eocd >= 20 && rd32(data + eocd - 20) == kEocd64Locator) {
    uint64_t e64 = rd64(data + eocd - 20 + 8);
    if (e64 + 56 > size || rd32(data + e64) != kEocd64) fail(label, ": corrupt zip64 end-of-central-directory record");
    n_entries = rd64(data + e64 + 32);
    cd_size = rd64(data + e64 + 40);
    cd_offset = rd64(data + e64 + 48);
  }
  if (cd_offset > size || cd_size > size - cd_offset) fail(label, ": zip central directory lies outside the file (truncated?)");

  std::map<std::string, ZipMember> index;
  uint64_t p = cd_offset;
  for (uint64_t e = 0; e < n_entries; ++e) {
    if (p + 46 > cd_offset + cd_size || rd32(data + p) != kCentral) fail(label, ": corrupt zip central directory at entry ", e);
    uint16_t method = rd16(data + p + 10);
    uint64_t csize = rd32(data + p + 20);
    uint64_t usize = rd32(data + p + 24);
    uint16_t name_len = rd16(data + p + 28), extra_len = rd16(data + p + 30), comment_len = rd16(data + p + 32);
    uint64_t local = rd32(data + p + 42);
    uint64_t next = p + 46 + name_len + extra_len + comment_len;
    if (next > cd_offset + cd_size) fail(label, ": corrupt zip central directory at entry ", e);
    std::string name(reinterpret_cast<const char*>(data + p + 46), name_len);
    // zip64 extended information replaces the fields that hold 0xFFFFFFFF, in this order.
    const uint8_t* x = data + p + 46 + name_len;
    const uint8_t* xend = x + extra_len;
    while (x + 4 <= xend) {
      uint16_t id = rd16(x), len = rd16(x + 2);
      if (x + 4 + len > xend) break;
      if (id == 0x0001) {
        const uint8_t* f = x + 4;
        const uint8_t* fend = f + len;
        if (usize == 0xFFFFFFFFu && f + 8 <= fend) { usize = rd64(f); f += 8; }
        if (csize == 0xFFFFFFFFu && f + 8 <= fend) { csize = rd64(f); f += 8; }
        if (local == 0xFFFFFFFFu && f + 8 <= fend) { local = rd64(f); f += 8; }
      }
      x += 4 + len;
    }
    if (method != 0) fail(label, ": zip member '", name, "' is compressed (method ", method, "); torch checkpoints are stored uncompressed");
    if (csize != usize) fail(label, ": zip member '", name, "' has inconsistent sizes");
    if (local + 30 > size || rd32(data + local) != kLocal) fail(label, ": zip member '", name, "' has no local header (truncated?)");
    uint64_t data_off = local + 30 + rd16(data + local + 26) + rd16(data + local + 28);
    if (data_off > size || usize > size - data_off) fail(label, ": zip member '", name, "' extends past the end of the file (truncated)");
    index[name] = ZipMember{data_off, usize};
    p = next;
  }
  return index;
}

}  // namespace skein
