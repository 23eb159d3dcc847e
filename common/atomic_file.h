// Files written whole or not at all: the bytes go to a temporary beside the file, which is then renamed
// over it. The temporary is named for this process and call, so writers of the same file at once (the
// ranks of one job making the default model, two jobs saving one session) never share it: each
// rename is atomic, and a reader sees the old file or a new one, never half of one. The bytes are
// flushed to disk before the rename and the rename after it, so a power cut keeps one of the two.
#pragma once
#include <functional>
#include <string>

namespace skein {

// `write` fills the temporary whose name it is given; throws skein::Error (and leaves no temporary)
// when it throws or the rename fails.
void write_file_atomically(const std::string& path, const std::function<void(const std::string& tmp)>& write);

// Throws skein::Error ("PATH: cannot write there: reason", or "PATH: is a folder, not a file") unless
// write_file_atomically could write `path` now: it is no folder, and its folder exists and takes a new
// file (a probe is made and removed). For outputs written after long work (a generated state, an eval's
// results, a checkpoint), checked before the work starts.
void check_writable(const std::string& path);

// rename(2), flushed to disk; throws skein::Error naming both files when it fails.
void rename_durably(const std::string& from, const std::string& to);

}  // namespace skein
