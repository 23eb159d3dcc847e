// The tests' own readings of JSON Schema's string keywords, independent of coordinator/string_pattern:
// `pattern` through the standard library's ECMAScript regex, `format` through parsers (inet_pton, the
// calendar) and the RFCs' rules written out by hand.
#pragma once
#include <string>

namespace skein::test {

// `regex` (ECMAScript, unanchored as JSON Schema reads it) matches somewhere in `utf8`, character by character.
bool matches_pattern(const std::string& regex, const std::string& utf8);
// `text` is a valid `format` value: date-time, date, time, duration, email, hostname, ipv4, ipv6, uri or uuid.
bool holds_format(const std::string& format, const std::string& text);

}  // namespace skein::test
