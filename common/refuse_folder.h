// A folder named where a file belongs is refused by name. An ifstream opens a folder and fails at its
// first read with a message that names nothing ("basic_filebuf::underflow ... Is a directory"), and
// TOML++ reads one as an empty config.
#pragma once
#include <filesystem>
#include <string>
#include <system_error>

#include "common/error.h"

namespace skein {

// Throws skein::Error "PATH: is a folder, not a file" when `path` is a folder; anything else (a
// missing file, a pipe) is left to the reader and its own message.
inline void refuse_folder(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(path, ": is a folder, not a file");
}

}  // namespace skein
