// Index of an uncompressed ("stored") zip archive, the container torch.save writes. Only the central
// directory is parsed; member data is referenced in place inside the mapped file.
#pragma once
#include <cstdint>
#include <map>
#include <string>

namespace skein {

struct ZipMember {
  uint64_t offset = 0;  // of the member's data within the archive
  uint64_t size = 0;
};

// Throws skein::Error naming `label` (the file) and the defect on any malformed or truncated archive.
std::map<std::string, ZipMember> read_zip_index(const uint8_t* data, uint64_t size, const std::string& label);

}  // namespace skein
