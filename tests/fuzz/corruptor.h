// The tests' valid inputs and seeded corruptions of them: byte-level for files, value-level for JSON and
// TOML (where byte flips mostly break the syntax and never reach the validation behind it).
#pragma once
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_support.h"

namespace skein::fuzz {

// The valid inputs of tests/fuzz/seeds/<target>/ (the fuzzers start from them too).
inline std::vector<std::string> seeds(const std::string& target) {
  std::vector<std::string> out;
  for (auto& entry : std::filesystem::directory_iterator(std::string(SKEIN_SOURCE_DIR) + "/tests/fuzz/seeds/" + target))
    out.push_back(test::read_file(entry.path().string()));
  return out;
}

class Corruptor {
 public:
  explicit Corruptor(uint64_t seed) : rng_(seed) {}

  size_t below(size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }

  std::string bytes(std::string s) {
    if (s.empty()) return std::string(1 + below(8), char(below(256)));
    // Half the edits land in the first or last 4 KiB, where headers, pickles and directories are.
    auto position = [&] {
      if (below(2) || s.size() <= 8192) return below(s.size());
      return below(2) ? below(4096) : s.size() - 1 - below(4096);
    };
    switch (below(7)) {
      case 0: s[position()] ^= char(1 << below(8)); break;
      case 1: s[position()] = char(below(256)); break;
      case 2: s.resize(below(s.size())); break;
      case 3: s.insert(position(), std::string(1 + below(16), char(below(256)))); break;
      case 4: { size_t p = position(); s.erase(p, 1 + below(16)); break; }
      case 5: {  // an extreme little-endian integer where a length or offset may be
        static const uint64_t extremes[] = {0, 0xFFFFFFFFull, 0x7FFFFFFFull, 0x80000000ull, ~0ull, 1ull << 62, 0xFFFFull};
        uint64_t v = extremes[below(std::size(extremes))];
        size_t p = position(), n = std::min<size_t>(size_t(4) << below(2), s.size() - p);
        std::memcpy(s.data() + p, &v, n);
        break;
      }
      default: { size_t p = position(); s.insert(p, s.substr(p, 1 + below(64))); break; }
    }
    return s;
  }

  nlohmann::json nasty_value() {
    static const char* values[] = {"null", "true", "false", "-1", "0", "1", "0.5", "-0.0", "1e308", "-1e308", "2147483648",
                                   "-2147483649", "9223372036854775807", "-9223372036854775808", "18446744073709551615",
                                   "\"\"", "\"x\"", "\"\\u0000\"", "\"-1\"", "[]", "{}", "[1,2]", "[-1]", "[256]",
                                   "[[1,2]]", "[\"a\",\"b\"]", "\"a\\nb\"", "[\"\\n\"]", "{\"a\":1}", "[[]]", "4096", "4097", "65536", "16", "17", "64", "65"};
    return nlohmann::json::parse(values[below(std::size(values))]);
  }

  std::string json(const std::string& seed) {
    nlohmann::json j = nlohmann::json::parse(seed);
    std::vector<nlohmann::json::json_pointer> paths;
    collect(j, nlohmann::json::json_pointer(), paths);
    auto& at = j[paths[below(paths.size())]];
    switch (below(4)) {
      case 0:
      case 1: at = nasty_value(); break;
      case 2:
        if (at.is_object() && !at.empty()) at.erase(std::next(at.begin(), long(below(at.size()))).key());
        else at = nasty_value();
        break;
      default:
        if (at.is_object()) at[below(2) ? "unknown_" + std::to_string(below(3)) : "un\nknown"] = nasty_value();
        else if (at.is_array()) at.push_back(nasty_value());
        else at = nlohmann::json::array({at});
    }
    std::string text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return below(8) ? text : bytes(text);
  }

  std::string toml(const std::string& seed) {
    static const char* values[] = {"-1", "0", "1", "0.5", "-0.5", "1e308", "inf", "-inf", "nan", "9223372036854775807", "-9223372036854775808",
                                   "99999999999999999999", "\"\"", "\"x\"", "\"-1\"", "\"1ZiB\"", "\"18446744073709551615\"", "\"0.5KiB\"",
                                   "\"1e30GiB\"", "[]", "[1]", "[\"\"]", "{}", "true", "false", "\"cuda:99 fp16\"", "\"cpu fp32 *0\"",
                                   "\"\\u0000\"", "2147483648", "4097", "1e-300"};
    std::vector<std::string> lines;
    std::istringstream in(seed);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    for (int edits = 1 + int(below(3)); edits > 0; --edits) {
      auto& line = lines[below(lines.size())];
      size_t eq = line.find('=');
      static const char* odd_lines[] = {"[x]", "unknown_key = 1", "\"un\\nknown\" = 1", "[\"a\\nb\"]", "x\\u0000 = 1"};
      if (eq == std::string::npos || below(10) == 0) line = odd_lines[below(std::size(odd_lines))];
      else line = line.substr(0, eq + 1) + " " + values[below(std::size(values))];
    }
    std::string text;
    for (auto& l : lines) text += l + "\n";
    return below(8) ? text : bytes(text);
  }

 private:
  static void collect(const nlohmann::json& j, const nlohmann::json::json_pointer& at, std::vector<nlohmann::json::json_pointer>& out) {
    out.push_back(at);
    if (j.is_object())
      for (auto& [k, v] : j.items()) collect(v, at / k, out);
    else if (j.is_array())
      for (size_t i = 0; i < j.size(); ++i) collect(j[i], at / i, out);
  }

  std::mt19937_64 rng_;
};

}  // namespace skein::fuzz
