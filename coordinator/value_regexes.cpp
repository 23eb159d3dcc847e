#include "coordinator/value_regexes.h"

#include <algorithm>
#include <vector>

#include "common/error.h"

namespace skein {

namespace {
std::string digits(size_t n) { return n == 0 ? "" : n == 1 ? "[0-9]" : "[0-9]{" + std::to_string(n) + "}"; }

// The numerals from a to b, both of the same length: a common first digit, or a's first digit with the
// rest from a's up, the digits between with any rest, and b's first digit with the rest up to b's.
std::string same_length(const std::string& a, const std::string& b) {
  if (a.empty()) return "";
  const size_t rest = a.size() - 1;
  const std::string head_a(1, a[0]), head_b(1, b[0]);
  if (a[0] == b[0]) return head_a + same_length(a.substr(1), b.substr(1));
  if (a.substr(1) == std::string(rest, '0') && b.substr(1) == std::string(rest, '9')) return "[" + head_a + "-" + head_b + "]" + digits(rest);
  std::string r = "(" + head_a + same_length(a.substr(1), std::string(rest, '9'));
  if (a[0] + 1 < b[0]) r += "|[" + std::string(1, char(a[0] + 1)) + "-" + std::string(1, char(b[0] - 1)) + "]" + digits(rest);
  return r + "|" + head_b + same_length(std::string(rest, '0'), b.substr(1)) + ")";
}

// The numerals from lo to hi (none: no bound), split where their length changes.
std::string naturals(uint64_t lo, std::optional<uint64_t> hi) {
  std::string from = std::to_string(lo), r;
  for (size_t length = from.size();; ++length) {
    const std::string nines(length, '9');
    if (hi && std::to_string(*hi).size() == length) return r + same_length(from, std::to_string(*hi));
    r += same_length(from, nines) + "|";
    if (!hi) return r + "[1-9]" + digits(length) + "[0-9]*";
    from.assign(length + 1, '0');
    from[0] = '1';
  }
}


// Numbers of magnitude from lo to hi (hi none: unbounded), their integer part I and fraction read apart:
// I == lo (a fraction of zeros only where lo == hi, a nonzero one where lo is exclusive), lo < I < hi
// (any fraction), I == hi (a fraction of zeros, where hi is inclusive).
std::string magnitudes(NumberBound lo, std::optional<NumberBound> hi) {
  const std::string any = "(\\.[0-9]+)?", zeros = "(\\.0+)?", nonzero = "\\.[0-9]*[1-9][0-9]*";
  const uint64_t l = uint64_t(lo.value);
  if (hi && uint64_t(hi->value) == l) return lo.exclusive || hi->exclusive ? "" : naturals(l, l) + zeros;
  std::string r;
  auto part = [&r](const std::string& integers, const std::string& fraction) {  // (integer part)fraction
    r.append(r.empty() ? "(" : "|(").append(integers).append(")").append(fraction);
  };
  part(naturals(l, l), lo.exclusive ? nonzero : any);
  if (!hi || uint64_t(hi->value) > l + 1) part(naturals(l + 1, hi ? std::optional<uint64_t>(uint64_t(hi->value) - 1) : std::nullopt), any);
  if (hi && !hi->exclusive) part(naturals(uint64_t(hi->value), uint64_t(hi->value)), zeros);
  return r;
}
}  // namespace

std::string integer_regex(std::optional<int64_t> lo, std::optional<int64_t> hi) {
  auto magnitude = [](int64_t v) { return v < 0 ? uint64_t(-(v + 1)) + 1 : uint64_t(v); };
  std::string r = "^(";
  if (!hi || *hi >= 0) {
    r += "(";
    r += naturals(lo && *lo > 0 ? uint64_t(*lo) : 0, hi ? std::optional<uint64_t>(uint64_t(*hi)) : std::nullopt);
    r += ")";
  }
  if (!lo || *lo < 0) {
    const uint64_t least = hi && *hi < 0 ? magnitude(*hi) : 1;
    r += r.size() > 2 ? "|-(" : "-(";
    r += naturals(least, lo ? std::optional<uint64_t>(magnitude(*lo)) : std::nullopt);
    r += ")";
  }
  return r + ")$";
}

std::string number_regex(std::optional<NumberBound> lo, std::optional<NumberBound> hi) {
  std::vector<std::string> parts;
  // x >= 0: from lo (or 0) up to hi.
  if (!hi || hi->value > 0 || (hi->value == 0 && !hi->exclusive))
    if (std::string r = magnitudes(lo && lo->value >= 0 ? *lo : NumberBound{0, false}, hi); !r.empty()) parts.push_back(r);
  // x < 0: magnitudes from -hi (or above 0) up to -lo.
  if (!lo || lo->value < 0) {
    const NumberBound least = hi && hi->value < 0 ? NumberBound{-hi->value, hi->exclusive} : NumberBound{0, true};
    if (std::string r = magnitudes(least, lo ? std::optional<NumberBound>(NumberBound{-lo->value, lo->exclusive}) : std::nullopt); !r.empty())
      parts.push_back(r.insert(0, "-(").append(")"));
  }
  std::string r = "^(";
  for (size_t i = 0; i < parts.size(); ++i) r += (i ? "|" : "") + parts[i];
  return r + ")$";
}

std::string format_regex(std::string_view format, uint32_t& max_chars) {
  const std::string octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
  const std::string ipv4 = "(" + octet + "\\.){3}" + octet;
  const std::string label = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
  const std::string year = "[0-9]{4}";
  const std::string leap_year = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)";
  const std::string date = "(" + year + "-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|" + year + "-(0[13-9]|1[0-2])-(29|30)|" + year +
                           "-(0[13578]|1[02])-31|" + leap_year + "-02-29)";
  const std::string time = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";
  const std::string clock = "T([0-9]+H([0-9]+M)?([0-9]+S)?|[0-9]+M([0-9]+S)?|[0-9]+S)";
  const std::string h16 = "[0-9A-Fa-f]{1,4}", ls32 = "(" + h16 + ":" + h16 + "|" + ipv4 + ")";
  if (format == "date-time") return "^" + date + "T" + time + "$";
  if (format == "date") return "^" + date + "$";
  if (format == "time") return "^" + time + "$";
  if (format == "duration")
    return "^P(([0-9]+Y([0-9]+M)?([0-9]+D)?|[0-9]+M([0-9]+D)?|[0-9]+D)(" + clock + ")?|" + clock + "|[0-9]+W)$";
  if (format == "email") return "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@" + label + "(\\." + label + ")+$";
  if (format == "hostname") {
    max_chars = std::min(max_chars, uint32_t(253));
    return "^" + label + "(\\." + label + ")*$";
  }
  if (format == "ipv4") return "^" + ipv4 + "$";
  if (format == "ipv6") {
    // RFC 3986's IPv6address: eight 16-bit pieces, or fewer around one "::".
    auto pieces = [&](int n) { return n == 0 ? std::string() : "(" + h16 + ":){" + std::to_string(n) + "}"; };
    auto before = [&](int most) { return most < 0 ? std::string() : "((" + h16 + ":){0," + std::to_string(most) + "}" + h16 + ")?"; };
    std::string r = "^(";
    r += pieces(6) + ls32;
    for (int j = 0; j <= 7; ++j) {
      r += "|";
      r += before(j - 1) + "::" + (j <= 5 ? pieces(5 - j) + ls32 : j == 6 ? h16 : "");
    }
    return r + ")$";
  }
  if (format == "uri") {
    // RFC 3986's URI with an authority, scheme://host[:port][/path][?query][#fragment]: the host a DNS
    // name (or an IPv4 address, which reads as one), the rest unreserved characters, sub-delims, ':',
    // '@' and percent escapes.
    const std::string pchar = "([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})";
    return "^[A-Za-z][A-Za-z0-9+.-]*://" + label + "(\\." + label + ")*(:[0-9]{1,5})?(/" + pchar + "*)*(\\?(" + pchar + "|[/?])*)?(#(" + pchar +
           "|[/?])*)?$";
  }
  if (format == "uuid") return "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
  fail("'", std::string(format.substr(0, 64)), "' is not one of date-time, date, time, duration, email, hostname, ipv4, ipv6, uri, uuid");
}

}  // namespace skein
