// State files: a session's whole context on disk. Layout (little-endian):
//   "SKEINST\0" | u32 format version | u32 arch | i32 n_layer, n_embd, n_head, head_size, vocab |
//   i32 first_layer, last_layer | u64 model fingerprint | u64 n_floats | f32 data[n_floats] |
//   u64 FNV-1a checksum of everything before it.
// Files are written to a temporary name and renamed, so a crash never leaves a half-written state.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/architecture.h"

namespace skein {

struct StateFileHeader {
  ModelDims dims;
  int first_layer = 0, last_layer = 0;
  uint64_t fingerprint = 0;
};

// A state file's bytes (what save_state_file writes), and back; `where` names the bytes' source in errors.
std::string encode_state_file(const StateFileHeader& h, const std::vector<float>& data);
std::vector<float> decode_state_file(std::string_view bytes, const StateFileHeader& expect, const std::string& where);
// The size of a state file of the model and layers `h` names.
size_t state_file_bytes(const StateFileHeader& h);

// Writes atomically; returns the file's checksum.
uint64_t save_state_file(const std::string& path, const StateFileHeader& h, const std::vector<float>& data);
// The checksum a state file ends with (read, not verified: load_state_file verifies); throws when the
// file cannot be read or is too short to be one.
uint64_t stored_state_checksum(const std::string& path);

// Whether the file starts as a state file does (its magic), so it is read as one; false when unreadable.
bool is_state_file(const std::string& path);

// Reads and verifies a state file; `expect` gives the model it must belong to. Errors name the file and
// what does not match.
std::vector<float> load_state_file(const std::string& path, const StateFileHeader& expect);

}  // namespace skein
