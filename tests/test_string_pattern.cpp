// coordinator/string_pattern against the standard library's ECMAScript regex and the formats' own rules.
#include "coordinator/string_pattern.h"

#include <gtest/gtest.h>

#include <cmath>
#include <deque>
#include <map>
#include <optional>
#include <random>

#include "common/error.h"
#include "coordinator/value_regexes.h"
#include "tests/string_checks.h"

namespace skein {
namespace {

using test::holds_format;
using test::matches_pattern;

// `text`, one byte after another, from the start; true when every byte is taken and the string may end there.
bool accepts(const StringPattern& p, const std::string& text) {
  uint16_t state = 0, chars = 0;
  for (char c : text)
    if (!p.step(state, chars, uint8_t(c))) return false;
  return p.can_end(state, chars);
}

size_t characters(const std::string& s) {
  return size_t(std::count_if(s.begin(), s.end(), [](char c) { return (uint8_t(c) & 0xc0) != 0x80; }));
}

// The shortest bytes that finish a string from (state, chars), found breadth first; nullopt for none.
std::optional<std::string> shortest_ending(const StringPattern& p, uint16_t state, uint16_t chars) {
  std::map<std::pair<uint16_t, uint16_t>, std::string> seen{{{state, chars}, ""}};
  std::deque<std::pair<uint16_t, uint16_t>> queue{{state, chars}};
  while (!queue.empty()) {
    const auto at = queue.front();
    queue.pop_front();
    const std::string text = seen[at];
    if (p.can_end(at.first, at.second)) return text;
    for (int b = 0; b < 256; ++b)
      if (uint16_t s = at.first, c = at.second; p.step(s, c, uint8_t(b)) && seen.emplace(std::pair{s, c}, text + char(b)).second)
        queue.push_back({s, c});
  }
  return std::nullopt;
}

// A random string the pattern allows: up to `most` random bytes of those it takes (mostly ASCII, so
// that the oracle's classes, which know no Unicode, agree; ending early where it may with probability
// 1/3), then the shortest ending. Fails the test at a state from which no string can be finished.
std::string walk(const StringPattern& p, std::mt19937& rng, int most = 40) {
  uint16_t state = 0, chars = 0;
  std::string text;
  for (int step = rng() % (most + 1); step > 0; --step) {
    if (p.can_end(state, chars) && rng() % 3 == 0) return text;
    std::vector<uint8_t> ascii, other;
    for (int b = 0; b < 256; ++b)
      if (uint16_t s = state, c = chars; p.step(s, c, uint8_t(b))) (b < 0x80 ? ascii : other).push_back(uint8_t(b));
    if (ascii.empty() && other.empty()) break;
    const auto& from = !ascii.empty() && (other.empty() || rng() % 8) ? ascii : other;
    const uint8_t b = from[rng() % from.size()];
    p.step(state, chars, b);
    text += char(b);
  }
  const auto ending = shortest_ending(p, state, chars);
  EXPECT_TRUE(ending) << "no string can be finished after \"" << text << "\"";
  return text + ending.value_or("");
}

TEST(StringPattern, WhatItGeneratesTheRegexMatches) {
  std::mt19937 rng(11);
  for (const std::string regex : {"^[A-Z]{2}-[0-9]{3,5}$", "ab+c", "^(cat|dog)s?$", "^\\d+(\\.\\d{1,2})?$", "x|^y", "^(?:[a-c]|z\\.)*$",
                                  "^\\w+@\\w+\\.com$", "^[^a-y]{2}$", "q.?r$", "^\\x41\\u0042[\\t\\n]?$", "^[\\u00e0-\\u00ff]{1,3}$", "^$",
                                  "^a{0}b{2,}$", "^[-a]\\-[a-]$", "^(ab|a)(bc|c)$", "[\\]\\[]"}) {
    SCOPED_TRACE(regex);
    const StringPattern p(regex, 0, StringPattern::kNoLimit);
    for (int i = 0; i < 200; ++i) {
      const std::string text = walk(p, rng);
      EXPECT_TRUE(matches_pattern(regex, text)) << "\"" << text << "\"";
      EXPECT_TRUE(accepts(p, text)) << "\"" << text << "\"";
    }
  }
}

// Both ways: over random strings, the automaton takes exactly what the regex matches.
TEST(StringPattern, AcceptsExactlyWhatTheRegexMatches) {
  std::mt19937 rng(3);
  const std::vector<std::string> alphabet = {"a", "b", "c", "0", "1", "-", ".", " ", "\n", "é", "€"};
  for (const std::string regex : {"^a*b$", "b.c", "^(a|b)+\\.?$", "^[^ab]*$", "^[abc]{2,3}-?\\d?$", "0$", "^(a|-)1|c\\.", "^\\D\\W?$",
                                  "^.{2}$", "^[é€]+a"}) {
    SCOPED_TRACE(regex);
    const StringPattern p(regex, 0, StringPattern::kNoLimit);
    int matched = 0;
    for (int i = 0; i < 3000; ++i) {
      std::string text;
      for (size_t n = rng() % 6; n > 0; --n) text += alphabet[rng() % alphabet.size()];
      const bool expected = matches_pattern(regex, text);
      EXPECT_EQ(accepts(p, text), expected) << "\"" << text << "\"";
      matched += expected;
    }
    EXPECT_GT(matched, 10);
  }
}

TEST(StringPattern, LengthsAreKeptWithThePatternAndNeverLeadToADeadEnd) {
  std::mt19937 rng(5);
  const StringPattern pairs("^(aa)+$", 3, 5);  // only "aaaa": 2 is too short and 6 too long
  for (int i = 0; i < 50; ++i) EXPECT_EQ(walk(pairs, rng), "aaaa");
  const StringPattern words("^[a-z]+( [a-z]+)*$", 4, 7);
  for (int i = 0; i < 300; ++i) {
    const std::string text = walk(words, rng);
    EXPECT_TRUE(matches_pattern("^[a-z]+( [a-z]+)*$", text) && characters(text) >= 4 && characters(text) <= 7) << text;
  }
  EXPECT_FALSE(accepts(words, "abcdefgh"));
  EXPECT_FALSE(accepts(words, "abc"));
  EXPECT_TRUE(accepts(words, "ab c"));
  const StringPattern wide("é", 2, StringPattern::kNoLimit);  // characters, not bytes
  EXPECT_FALSE(accepts(wide, "é"));
  EXPECT_TRUE(accepts(wide, "éé"));
  EXPECT_TRUE(accepts(wide, "xé"));
  // A minimum alone is counted up to, and no further: longer strings share their states.
  uint16_t s1 = 0, c1 = 0, s2 = 0, c2 = 0;
  for (char c : std::string("xxé")) wide.step(s1, c1, uint8_t(c));
  for (char c : std::string("xxxxxxxé")) wide.step(s2, c2, uint8_t(c));
  EXPECT_EQ(c1, c2);
  EXPECT_EQ(s1, s2);
}

TEST(StringPattern, FormatsGenerateValidValuesAndRefuseInvalidOnes) {
  std::mt19937 rng(7);
  for (const std::string format : {"date-time", "date", "time", "duration", "email", "hostname", "ipv4", "ipv6", "uri", "uuid"}) {
    SCOPED_TRACE(format);
    uint32_t max = StringPattern::kNoLimit;
    const std::string regex = format_regex(format, max);
    const StringPattern p(regex, 0, max);
    for (int i = 0; i < 300; ++i) {
      const std::string text = walk(p, rng);
      EXPECT_TRUE(holds_format(format, text)) << "\"" << text << "\"";
    }
  }
  auto format = [](const std::string& name) {
    uint32_t max = StringPattern::kNoLimit;
    const std::string regex = format_regex(name, max);  // lowers max first
    return StringPattern(regex, 0, max);
  };
  const StringPattern date = format("date"), ipv6 = format("ipv6"), ipv4 = format("ipv4"), duration = format("duration"), hostname = format("hostname");
  for (const char* ok : {"2024-02-29", "2000-02-29", "2023-12-31", "0001-01-01"}) EXPECT_TRUE(accepts(date, ok)) << ok;
  for (const char* bad : {"2023-02-29", "1900-02-29", "2023-04-31", "2023-13-01", "2023-1-01"}) EXPECT_FALSE(accepts(date, bad)) << bad;
  for (const char* ok : {"::", "::1", "2001:db8::8a2e:370:7334", "::ffff:192.0.2.128", "1:2:3:4:5:6:7:8", "1::", "fe80::1:2:3:4:5:6"})
    EXPECT_TRUE(accepts(ipv6, ok) && holds_format("ipv6", ok)) << ok;
  for (const char* bad : {"1::2::3", "1:2:3:4:5:6:7:8:9", "12345::", "1:2:3:4:5:6:7::8", ":1:2"}) EXPECT_FALSE(accepts(ipv6, bad)) << bad;
  for (const char* bad : {"256.1.1.1", "01.2.3.4", "1.2.3"}) EXPECT_FALSE(accepts(ipv4, bad)) << bad;
  for (const char* bad : {"P", "PT", "P1H", "PT1D", "P1WT1H"}) EXPECT_FALSE(accepts(duration, bad)) << bad;
  EXPECT_TRUE(accepts(duration, "P1Y2M3DT4H5M6S"));
  const StringPattern uri = format("uri");
  for (const char* ok : {"https://example.com", "http://a.b:8080/p%20q/r?x=1&y=/z#frag", "s3://bucket/key", "ftp://1.2.3.4/"}) EXPECT_TRUE(accepts(uri, ok) && holds_format("uri", ok)) << ok;
  for (const char* bad : {"example.com", "http://exa mple.com", "http://x/%zz", "1http://x", "http://x#a#b"}) EXPECT_FALSE(accepts(uri, bad)) << bad;
  std::string long_name;
  for (int i = 0; i < 4; ++i) long_name += std::string(63, 'a') + ".";
  EXPECT_FALSE(accepts(hostname, long_name + "a"));  // 257 characters: above 253
  EXPECT_TRUE(accepts(hostname, long_name.substr(0, 253)));
}

TEST(StringPattern, RefusesWhatItCannotServeAndSaysWhere) {
  for (auto [regex, message] : std::vector<std::pair<std::string, std::string>>{
           {"(?=a)b", "at character 2: lookaround ((?=, (?!, (?<=, (?<!) is not supported"},
           {"(a)\\1", "at character 4: backreferences are not supported"},
           {"\\bword", "at character 1: word boundaries (\\b, \\B) are not supported"},
           {"a^b", "at character 1: '^' is supported only at the start of the pattern or of a top-level alternative"},
           {"a$b", "at character 1: '$' is supported only at the end of the pattern or of a top-level alternative"},
           {"*a", "at character 0: nothing to repeat"},
           {"a**", "at character 2: nothing to repeat"},
           {"a{2", "at character 3: '{' must begin {n}, {n,} or {n,m} (\\{ is the character)"},
           {"a{3,2}", "at character 6: {3,2} counts down"},
           {"a{1001}", "at character 6: a repeat count above 1000"},
           {"(ab", "at character 3: '(' without its ')'"},
           {"ab)", "at character 2: ')' without its '('"},
           {"[z-a]", "at character 1: a class range out of order"},
           {"[\\d-z]", "at character 1: a class range needs a single character at each end"},
           {"[ab", "at character 3: '[' without its ']'"},
           {"\\q", "at character 1: '\\' before a character that ECMA-262 gives no meaning to"},
           {"\\u{41}", "at character 2: \\u{...} needs the u flag, which JSON Schema patterns do not have (write \\uHHHH)"},
           {"\\ud800", "at character 6: a lone surrogate"},
           {"^\\u0001$", "no string a JSON string can hold matches it"},
           {"^[a-z]{300}$", "no string a JSON string can hold matches it within minLength/maxLength"},  // at most 100
           {"^[a-z]{1000}$", "its 1001 automaton states times minLength 2000 are above 1048576"},
           {"^.{0,1000}$", "needs more than 4096 automaton states (a long counted repeat such as .{0,1000} is cheaper as maxLength)"},
       }) {
    SCOPED_TRACE(regex);
    try {
      StringPattern p(regex, regex == "^[a-z]{1000}$" ? 2000 : 0, regex == "^[a-z]{300}$" ? 100 : StringPattern::kNoLimit);
      ADD_FAILURE() << "compiled";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
  }
  EXPECT_THROW(StringPattern("^a$", 2, StringPattern::kNoLimit), Error);  // no string of two characters matches
  // The work a schema may spend on its patterns is shared by all of them.
  size_t work_left = StringPattern::kMaxWork;
  const StringPattern heavy("(\\S{1,4}\\s){1,20}", 0, StringPattern::kNoLimit, &work_left);
  EXPECT_LT(work_left, StringPattern::kMaxWork / 2);
  try {
    StringPattern again("(\\S{1,4}\\s){1,20}", 0, StringPattern::kNoLimit, &work_left);
    ADD_FAILURE() << "compiled";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "too complex: the schema's patterns, formats and bounds take more than 12582912 steps to compile");
  }
  uint32_t max = 0;
  EXPECT_THROW(format_regex("iri", max), Error);
}

}  // namespace
}  // namespace skein

namespace skein {
namespace {

// Integers and decimals near and far from the bounds, written as a JSON writer would: accepted exactly
// when they are within them.
TEST(StringPattern, BoundsAllowExactlyTheNumbersBetweenThem) {
  using Bound = NumberBound;
  std::mt19937_64 rng(1);
  using Limits = std::pair<std::optional<int64_t>, std::optional<int64_t>>;
  for (auto [lo, hi] : std::vector<Limits>{{0, {}}, {1, 5}, {-3, 7}, {{}, -1}, {{}, {}}, {7, 7}, {-120, -15}, {95, 1234}, {INT64_MIN, INT64_MAX}}) {
    SCOPED_TRACE(std::to_string(lo.value_or(-1)) + " " + std::to_string(hi.value_or(-1)));
    const StringPattern p(integer_regex(lo, hi), 0, 65);
    for (int i = 0; i < 4000; ++i) {
      const int k = int(rng() % 4);
      const int64_t near = int64_t(rng() % 20) - 10;
      const int64_t v = k == 0 ? int64_t(rng() % 3000) - 1500 : k == 1 ? lo.value_or(0) + near : k == 2 ? hi.value_or(0) + near : int64_t(rng());
      const bool within = (!lo || v >= *lo) && (!hi || v <= *hi);
      ASSERT_EQ(accepts(p, std::to_string(v)), within) << v;
    }
    for (const char* never : {"00", "01", "-0", "-01", "1.0", "1e1", "-"}) EXPECT_FALSE(accepts(p, never)) << never;
  }
  // Bounds as the decimals a schema writes ("" for none; a leading '>' or '<' makes one exclusive).
  auto bound = [](const std::string& text) -> std::optional<Bound> {
    if (text.empty()) return std::nullopt;
    const bool exclusive = text[0] == '>' || text[0] == '<';
    return NumberBound::parse(exclusive ? text.substr(1) : text, exclusive);
  };
  for (auto [low, high] : std::vector<std::pair<std::string, std::string>>{
           {"0", ""}, {">0", ""}, {"0", "1"}, {">1", "<5"}, {"-3", "<7"}, {"", "<0"}, {"", "-2"}, {"", ""}, {"7", "7"}, {">-120", "-15"}, {">-1", "<0"},
           {"0.25", "<0.75"}, {">0.25", "0.2501"}, {"-2.5", ""}, {"", "<0.001"}, {"1.5", "1.5"}, {">-0.125", "3.1"}, {"-0.75", "<-0.5"}, {">9.99", "<10.01"},
           {"1e-3", "2.5E1"}, {"-0.0", "0.10"}}) {
    SCOPED_TRACE(low + " " + high);
    const std::optional<Bound> lo = bound(low), hi = bound(high);
    const StringPattern p(number_regex(lo, hi), 0, 130);
    auto as_double = [](const std::string& t) { return std::stod(t[0] == '>' || t[0] == '<' ? t.substr(1) : t); };
    const double lo_x = low.empty() ? 0 : as_double(low), hi_x = high.empty() ? 0 : as_double(high);
    for (int i = 0; i < 4000; ++i) {
      const int k = int(rng() % 4);
      const double near = double(int64_t(rng() % 40) - 20) / 16;
      const double v = k == 0 ? double(int64_t(rng() % 300) - 150) / 8 : k == 1 ? lo_x + near : k == 2 ? hi_x + near : double(int64_t(rng() % 200) - 100);
      char text[64];
      snprintf(text, sizeof text, "%.*f", int(rng() % 6), v);
      const double x = std::stod(text);
      if (x == 0 && text[0] == '-') continue;  // -0: never written
      const bool within = (!lo || (lo->exclusive ? x > lo_x : x >= lo_x)) && (!hi || (hi->exclusive ? x < hi_x : x <= hi_x));
      ASSERT_EQ(accepts(p, text), within) << text;
    }
    for (const std::string& edge : {low, high}) {  // the bound itself, with trailing zeros too
      if (edge.empty()) continue;
      char text[64];
      snprintf(text, sizeof text, "%.6f", as_double(edge));
      const bool exclusive = edge[0] == '>' || edge[0] == '<';
      const double x = std::stod(text);
      const bool within = (!lo || (lo->exclusive ? x > lo_x : x >= lo_x)) && (!hi || (hi->exclusive ? x < hi_x : x <= hi_x));
      if (x != 0 || text[0] != '-') {
        EXPECT_EQ(accepts(p, text), within && !exclusive) << text;
      }
    }
    EXPECT_FALSE(accepts(p, "1e0"));
  }
}

// multipleOf: exactly the multiples within the bounds, as long as their digits run (the remainder is
// followed digit by digit, so 64-digit multiples are checked against a remainder computed here).
TEST(StringPattern, MultiplesAreExactlyTheNumbersItDivides) {
  std::mt19937_64 rng(2);
  using Limits = std::pair<std::optional<int64_t>, std::optional<int64_t>>;
  for (uint32_t m : {1u, 2u, 3u, 7u, 12u, 25u, 100u, 999u}) {
    for (auto [lo, hi] : std::vector<Limits>{{{}, {}}, {0, {}}, {-50, 50}, {1, 1000}, {{}, -3}}) {
      SCOPED_TRACE(std::to_string(m) + ": " + std::to_string(lo.value_or(-1)) + " " + std::to_string(hi.value_or(-1)));
      const StringPattern p(integer_regex(lo, hi), 0, 65, nullptr, m);
      for (int i = 0; i < 3000; ++i) {
        const int k = int(rng() % 3);
        const int64_t v = k == 0 ? int64_t(rng() % 3000) - 1500 : k == 1 ? int64_t(rng() % 40) * int64_t(m) - 20 * int64_t(m) : int64_t(rng());
        const bool ok = v % int64_t(m) == 0 && (!lo || v >= *lo) && (!hi || v <= *hi);
        ASSERT_EQ(accepts(p, std::to_string(v)), ok) << v;
      }
      if (lo || hi) continue;
      std::string digits = "1";  // long numbers: the remainder of their digits, computed by hand
      for (int i = 0; i < 60; ++i) digits += char('0' + rng() % 10);
      uint64_t r = 0;
      for (char c : digits) r = (r * 10 + uint64_t(c - '0')) % m;
      EXPECT_EQ(accepts(p, digits), r == 0) << digits;
      EXPECT_EQ(accepts(p, "-" + digits), r == 0) << digits;
    }
  }
}

// A fractional multipleOf m / 10^k: the value times 10^k is a multiple of m, checked here on values kept
// as whole numbers of ten-thousandths; after k digits past the point only zeros may come.
TEST(StringPattern, FractionalMultiplesAreExactlyTheDecimalsTheyDivide) {
  std::mt19937_64 rng(3);
  struct Multiple {
    uint32_t m, k;
  };
  using Limits = std::pair<std::optional<std::string>, std::optional<std::string>>;
  for (Multiple mk : {Multiple{1, 2}, Multiple{5, 1}, Multiple{25, 1}, Multiple{25, 2}, Multiple{3, 1}, Multiple{7, 3}}) {
    for (auto [lo, hi] : std::vector<Limits>{{{}, {}}, {"0", {}}, {"-2.5", "2.5"}, {"0.35", "12.125"}}) {
      SCOPED_TRACE(std::to_string(mk.m) + "/10^" + std::to_string(mk.k) + ": " + lo.value_or("-") + " " + hi.value_or("-"));
      auto bound = [](const std::optional<std::string>& t) { return t ? std::optional(NumberBound::parse(*t, false)) : std::nullopt; };
      const StringPattern p(number_regex(bound(lo), bound(hi)), 0, 65, nullptr, mk.m, mk.k);
      auto scaled = [](const std::string& t) { return int64_t(std::llround(std::stod(t) * 10000)); };  // exact for these short decimals
      int64_t ten_k = 1;
      for (uint32_t i = 0; i < mk.k; ++i) ten_k *= 10;
      for (int i = 0; i < 3000; ++i) {
        const int f = int(rng() % 5);  // digits past the point
        int64_t unit = 1;
        for (int j = f; j < 4; ++j) unit *= 10;
        const int64_t n = (int64_t(rng() % 4001) - 2000) * (i % 2 ? unit : unit * int64_t(mk.m));
        std::string text = std::to_string(std::llabs(n) / 10000);
        if (f) text += "." + std::to_string(10000 + std::llabs(n) % 10000).substr(1, size_t(f));
        if (n < 0) text = "-" + text;
        const bool multiple = (n * ten_k) % (int64_t(mk.m) * 10000) == 0;
        const bool within = (!lo || n >= scaled(*lo)) && (!hi || n <= scaled(*hi));
        ASSERT_EQ(accepts(p, text), multiple && within) << text;
      }
    }
  }
}

}  // namespace
}  // namespace skein
