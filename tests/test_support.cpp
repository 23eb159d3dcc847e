#include "tests/test_support.h"

#include <sys/wait.h>

#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace skein::test {

std::string shared_dir() {
  if (const char* s = std::getenv("SKEIN_SHARED"); s && *s) return s;
  return std::string(SKEIN_SOURCE_DIR) + "/../shared";
}

std::string golden(const std::string& rel) { return shared_dir() + "/golden/" + rel; }

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path + " (is SKEIN_SHARED set?)");
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_file(path)); }

std::vector<float> read_f32(const std::string& path) {
  std::string b = read_file(path);
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double d = std::fabs(double(a[i]) - double(b[i]));
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

std::string join(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s;
}

std::string temp_dir() {
  static struct Cleanup {
    std::vector<std::string> dirs;
    ~Cleanup() {
      std::error_code ec;
      for (auto& d : dirs) std::filesystem::remove_all(d, ec);
    }
  } cleanup;
  auto* dirs = &cleanup.dirs;
  std::string tmpl = (std::filesystem::temp_directory_path() / "skein-test-XXXXXX").string();
  char* p = mkdtemp(tmpl.data());
  if (!p) throw std::runtime_error("mkdtemp failed");
  dirs->push_back(p);
  return p;
}

std::string mpirun_skein(int ranks, const std::string& args) {
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  // --mca mpi_yield_when_idle: ranks that wait give their core away (2 cores, up to 5 ranks).
  return "mpirun -np " + std::to_string(ranks) + " --oversubscribe --mca mpi_yield_when_idle 1 --bind-to none " + std::string(SKEIN_BINARY) + " " + args;
}

CommandResult run_shell(const std::string& cmd) {
  std::string out_file = temp_dir() + "/out.txt", err_file = out_file + ".err";
  int status = std::system(("timeout 120 " + cmd + " > " + out_file + " 2> " + err_file + " < /dev/null").c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, read_file(out_file) + read_file(err_file)};
}

CommandResult run_skein(const std::string& args, const std::string& input) {
  std::string cmd = std::string(SKEIN_BINARY) + " " + args;
  std::string in_file;
  if (!input.empty()) {
    in_file = temp_dir() + "/stdin";
    write_file(in_file, input);
    cmd += " < '" + in_file + "'";
  } else {
    cmd += " < /dev/null";
  }
  cmd += " 2>&1";
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) throw std::runtime_error("popen failed");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  int status = pclose(f);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return {code, out};
}

}  // namespace skein::test
