#include "tests/string_checks.h"

#include <arpa/inet.h>

#include <chrono>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace skein::test {

namespace {
std::wstring wide(const std::string& utf8) {
  std::wstring out;
  for (size_t i = 0; i < utf8.size();) {
    const auto b = uint8_t(utf8[i]);
    const int n = b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
    uint32_t cp = n == 1 ? b : b & (0x3f >> (n - 1));
    for (int k = 1; k < n && i + size_t(k) < utf8.size(); ++k) cp = cp << 6 | (uint8_t(utf8[i + size_t(k)]) & 0x3f);
    out.push_back(wchar_t(cp));
    i += size_t(n);
  }
  return out;
}

bool digits(const std::string& s, size_t from, size_t count) {
  if (from + count > s.size()) return false;
  for (size_t i = from; i < from + count; ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}
int number(const std::string& s, size_t from, size_t count) { return std::stoi(s.substr(from, count)); }

bool date(const std::string& s) {
  if (s.size() != 10 || !digits(s, 0, 4) || s[4] != '-' || !digits(s, 5, 2) || s[7] != '-' || !digits(s, 8, 2)) return false;
  const std::chrono::year_month_day ymd{std::chrono::year(number(s, 0, 4)), std::chrono::month(unsigned(number(s, 5, 2))),
                                        std::chrono::day(unsigned(number(s, 8, 2)))};
  return ymd.ok();
}

// RFC 3339 full-time: hh:mm:ss[.frac] and Z or an offset.
bool time(const std::string& s) {
  if (s.size() < 9 || !digits(s, 0, 2) || s[2] != ':' || !digits(s, 3, 2) || s[5] != ':' || !digits(s, 6, 2)) return false;
  if (number(s, 0, 2) > 23 || number(s, 3, 2) > 59 || number(s, 6, 2) > 59) return false;
  size_t i = 8;
  if (s[i] == '.') {
    const size_t from = ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == from) return false;
  }
  if (i + 1 == s.size() && (s[i] == 'Z' || s[i] == 'z')) return true;
  return i + 6 == s.size() && (s[i] == '+' || s[i] == '-') && digits(s, i + 1, 2) && s[i + 3] == ':' && digits(s, i + 4, 2) &&
         number(s, i + 1, 2) <= 23 && number(s, i + 4, 2) <= 59;
}

// ISO 8601 as RFC 3339's appendix A: P, then weeks alone, or date parts (Y M D in order), then T and
// time parts (H M S in order); at least one part, and at least one after T.
bool duration(const std::string& s) {
  if (s.size() < 2 || s[0] != 'P') return false;
  size_t i = 1;
  auto parts = [&](const std::string& units, bool& any) {
    size_t next_unit = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      const size_t from = i;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
      if (i == s.size() || i == from) return false;
      const size_t u = units.find(s[i], next_unit);
      if (u == std::string::npos) return false;
      next_unit = u + 1, ++i, any = true;
    }
    return true;
  };
  bool weeks = false;
  if (s.back() == 'W') return parts("W", weeks) && weeks && i == s.size();
  bool date_part = false, time_part = false;
  if (!parts("YMD", date_part)) return false;
  if (i < s.size()) {
    if (s[i++] != 'T' || !parts("HMS", time_part) || !time_part) return false;
  }
  return i == s.size() && (date_part || time_part);
}

bool label(const std::string& l) {
  if (l.empty() || l.size() > 63 || l.front() == '-' || l.back() == '-') return false;
  for (char c : l)
    if (!std::isalnum(uint8_t(c)) && c != '-') return false;
  return true;
}
std::vector<std::string> split(const std::string& s, char by) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == by) out.emplace_back();
    else out.back().push_back(c);
  }
  return out;
}
bool hostname(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  for (const std::string& l : split(s, '.'))
    if (!label(l)) return false;
  return true;
}
// RFC 3986 section 3: scheme ":" hier-part ["?" query] ["#" fragment], every character unreserved, a
// sub-delim, a gen-delim in its place or a percent escape; with "//", an authority whose port is digits.
bool uri(const std::string& s) {
  const size_t colon = s.find(':');
  if (colon == std::string::npos || colon == 0 || !std::isalpha(uint8_t(s[0]))) return false;
  for (size_t i = 1; i < colon; ++i)
    if (!std::isalnum(uint8_t(s[i])) && std::string("+-.").find(s[i]) == std::string::npos) return false;
  const std::string rest = s.substr(colon + 1);
  const std::string allowed = "-._~!$&'()*+,;=:@/?#";
  int fragments = 0;
  for (size_t i = 0; i < rest.size(); ++i) {
    const char c = rest[i];
    if (c == '%') {
      if (i + 2 >= rest.size() || !std::isxdigit(uint8_t(rest[i + 1])) || !std::isxdigit(uint8_t(rest[i + 2]))) return false;
      i += 2;
    } else if (!std::isalnum(uint8_t(c)) && allowed.find(c) == std::string::npos) {
      return false;
    }
    fragments += c == '#';
  }
  if (fragments > 1) return false;
  if (rest.rfind("//", 0) != 0) return true;
  const std::string authority = rest.substr(2, rest.find_first_of("/?#", 2) - 2);
  const std::string host_port = authority.substr(authority.find('@') == std::string::npos ? 0 : authority.find('@') + 1);
  const size_t port = host_port.rfind(':');
  if (port == std::string::npos) return true;
  for (size_t i = port + 1; i < host_port.size(); ++i)
    if (!std::isdigit(uint8_t(host_port[i]))) return false;
  return true;
}
}  // namespace

bool matches_pattern(const std::string& regex, const std::string& utf8) {
  return std::regex_search(wide(utf8), std::wregex(wide(regex), std::regex::ECMAScript));
}

bool holds_format(const std::string& format, const std::string& text) {
  if (format == "date") return date(text);
  if (format == "time") return time(text);
  if (format == "date-time") {
    const size_t t = text.find('T');
    return t != std::string::npos && date(text.substr(0, t)) && time(text.substr(t + 1));
  }
  if (format == "duration") return duration(text);
  if (format == "hostname") return hostname(text);
  if (format == "email") {
    const size_t at = text.rfind('@');
    if (at == std::string::npos || at == 0 || text.find('@') != at) return false;
    const std::string local = text.substr(0, at), domain = text.substr(at + 1);
    for (const std::string& atom : split(local, '.')) {
      if (atom.empty()) return false;
      for (char c : atom)
        if (!std::isalnum(uint8_t(c)) && std::string("!#$%&'*+/=?^_`{|}~-").find(c) == std::string::npos) return false;
    }
    return hostname(domain) && domain.find('.') != std::string::npos;
  }
  if (format == "ipv4" || format == "ipv6") {
    unsigned char buffer[16];
    return inet_pton(format == "ipv4" ? AF_INET : AF_INET6, text.c_str(), buffer) == 1;
  }
  if (format == "uri") return uri(text);
  if (format == "uuid") {
    if (text.size() != 36) return false;
    for (size_t i = 0; i < 36; ++i)
      if (i == 8 || i == 13 || i == 18 || i == 23 ? text[i] != '-' : !std::isxdigit(uint8_t(text[i]))) return false;
    return true;
  }
  throw std::invalid_argument("holds_format: no check for " + format);
}

}  // namespace skein::test
