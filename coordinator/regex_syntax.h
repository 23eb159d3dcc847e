// A JSON Schema `pattern`, parsed: the subset of ECMA-262 regular expressions Skein serves, as a tree of
// code point sets, sequences, alternatives and repeats (coordinator/string_pattern compiles it).
//
// The subset: literal characters, `.`, classes `[...]` (ranges, negation, \d \w \s and their
// complements), groups `(...)`, `(?:...)`, `(?<name>...)`, alternation, `* + ? {n} {n,} {n,m}` (and their
// lazy forms, which match the same strings), `^` and `$` at the ends of the pattern or of its top-level
// alternatives, and the escapes \t \n \r \v \f \0 \xHH \uHHHH and escaped syntax characters. Lookaround,
// backreferences and word boundaries are refused. As JSON Schema says, a pattern matches anywhere in the
// string unless it is anchored: an alternative without `^` (or `$`) begins (or ends) with any string.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace skein {

using CodePoints = std::vector<std::pair<uint32_t, uint32_t>>;  // inclusive ranges, sorted and apart
constexpr uint32_t kMaxCodePoint = 0x10FFFF;
CodePoints intersection(const CodePoints& a, const CodePoints& b);

struct RegexNode {
  static constexpr uint32_t kUnbounded = UINT32_MAX;
  enum Kind : uint8_t { Chars, Concat, Alternate, Repeat } kind;
  CodePoints chars;          // Chars: any one of these
  std::vector<size_t> kids;  // Concat, Alternate: in order; Repeat: the one repeated
  uint32_t min = 0, max = 0;  // Repeat: how many times (max kUnbounded for no bound)
};

struct Regex {
  std::vector<RegexNode> nodes;
  size_t root = 0;
};

constexpr uint32_t kMaxRepeat = 1000;  // n and m of {n,m}

// Throws skein::Error "at character N: problem" (N counts characters from 0).
Regex parse_regex(std::string_view pattern);

}  // namespace skein
