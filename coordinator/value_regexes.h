// Anchored regular expressions (coordinator/regex_syntax's subset) of JSON values a schema describes by
// other keywords: a string's `format`, and an integer's or number's bounds as the text of the number.
// coordinator/string_pattern compiles them as it compiles a `pattern`.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace skein {

// A JSON Schema format: date-time, date, time, duration, email, hostname, ipv4, ipv6, uuid (as OpenAI's
// structured outputs list them) or uri (as pydantic's URL types write it); "" for binary, password and
// path, which any string is; throws skein::Error for another. A format with a length limit of its
// own (a hostname's 253) lowers `max_chars` to it.
std::string format_regex(std::string_view format, uint32_t& max_chars);

// The JSON integers from `lo` to `hi` (none: unbounded), as a number is written: no leading zeros, no -0.
std::string integer_regex(std::optional<int64_t> lo, std::optional<int64_t> hi);

// A bound of a number, as an exact decimal: -whole.fraction when negative (fraction: the digits after
// the point, without trailing zeros; zero is never negative), and whether the number may equal it.
struct NumberBound {
  bool negative = false;
  uint64_t whole = 0;
  std::string fraction;
  bool exclusive = false;
  static NumberBound of(int64_t value, bool exclusive);
  // A JSON number's text ("-12.50", "1e-05"); throws skein::Error for more than kMaxFractionDigits
  // digits after the point or a whole part beyond 64 bits.
  static NumberBound parse(std::string_view text, bool exclusive);
  static constexpr size_t kMaxFractionDigits = 32;
  std::string text() const;
};
int compare(const NumberBound& a, const NumberBound& b);  // by value: <0, 0 or >0

// The JSON numbers between two bounds (none: unbounded), each inclusive or not: a fraction is allowed,
// an exponent is not (1e2 is written 100). Throws skein::Error when none is.
std::string number_regex(std::optional<NumberBound> lo, std::optional<NumberBound> hi);

}  // namespace skein
