// Helpers shared by the tests: where ../shared is, reading golden files, running the CLI.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace skein::test {

// $SKEIN_SHARED, else <source>/../shared. Tests that need it fail (not skip) when it is missing.
std::string shared_dir();
std::string golden(const std::string& rel);  // shared_dir()/golden/rel
nlohmann::json read_json(const std::string& path);
std::vector<float> read_f32(const std::string& path);
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);

// Max |a-b| (inf when sizes differ).
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b);

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};
// Runs `skein <args>` through the shell; stdin from `input` when given.
CommandResult run_skein(const std::string& args, const std::string& input = "");

// `mpirun -np N skein <args>` as a shell command (root allowed, oversubscribed, waiting ranks yield their core).
std::string mpirun_skein(int ranks, const std::string& args);
// Runs a shell command with a 120 s limit; output is stdout then stderr (ranks' stderr would interleave).
CommandResult run_shell(const std::string& cmd);

// A fresh temporary directory, removed at exit.
std::string temp_dir();

// Token ids as `skein logits --tokens` takes them: "1,2,3".
std::string join(const std::vector<int32_t>& ids);

}  // namespace skein::test
