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


// The digits after a point (a fraction written "." and them, or none for zero) whose value lies between
// 0.a and 0.b (b none: below 1), each inclusive or not; a and b without trailing zeros. Built digit by
// digit: while the digits so far equal a's (tight_lo) or b's (tight_hi), the next one is held to theirs.
class FractionRegex {
 public:
  FractionRegex(std::string a, bool a_exclusive, std::optional<std::string> b, bool b_exclusive)
      : a_(std::move(a)), b_(std::move(b)), a_exclusive_(a_exclusive), b_exclusive_(b_exclusive) {}

  // The fraction's regex ("" for none), or nullopt when no fraction is within the bounds.
  std::optional<std::string> regex() const {
    auto [alternatives, can_end] = next_digits(0, true, b_.has_value());
    if (alternatives.empty()) return can_end ? std::optional<std::string>("") : std::nullopt;
    const std::string r = "(\\.(" + alternatives + "))";
    return can_end ? r + "?" : r;
  }

 private:
  // The digit strings that may follow the first i digits (possibly none).
  std::optional<std::string> rest(size_t i, bool tight_lo, bool tight_hi) const {
    if ((!tight_lo || i >= a_.size()) && (!tight_hi || i >= b_->size())) {  // only zeros are left in the bounds
      if (tight_lo && tight_hi) return a_exclusive_ || b_exclusive_ ? std::nullopt : std::optional<std::string>("0*");
      if (tight_lo) return a_exclusive_ ? "[0-9]*[1-9][0-9]*" : "[0-9]*";
      if (tight_hi) return b_exclusive_ ? std::nullopt : std::optional<std::string>("0*");
      return "[0-9]*";
    }
    auto [alternatives, can_end] = next_digits(i, tight_lo, tight_hi);
    if (alternatives.empty()) return can_end ? std::optional<std::string>("") : std::nullopt;
    return "(" + alternatives + ")" + (can_end ? "?" : "");
  }

  // The alternatives for digit i onward (each beginning with it, joined by |), and whether the digits
  // may end before it.
  std::pair<std::string, bool> next_digits(size_t i, bool tight_lo, bool tight_hi) const {
    // Ending here leaves 0.(digits so far): at least a's only once a's digits are all matched, below b's
    // (exclusive) only while some of b's are left.
    const bool can_end = (!tight_lo || (i >= a_.size() && !a_exclusive_)) && (!tight_hi || !b_exclusive_ || i < b_->size());
    const int lo = tight_lo && i < a_.size() ? a_[i] - '0' : 0, hi = tight_hi ? (i < b_->size() ? (*b_)[i] - '0' : 0) : 9;
    std::string alternatives;
    if (tight_lo && tight_hi && lo > hi) return {alternatives, false};  // above b already
    auto add = [&](int from, int to, bool still_lo, bool still_hi) {
      if (from > to) return;
      const std::optional<std::string> after = rest(i + 1, still_lo, still_hi);
      if (!after) return;
      if (!alternatives.empty()) alternatives += "|";
      if (from == to) {
        alternatives += char('0' + from);
      } else {  // appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string&&
        alternatives += '[';
        alternatives += char('0' + from);
        alternatives += '-';
        alternatives += char('0' + to);
        alternatives += ']';
      }
      alternatives += *after;
    };
    if (tight_lo && tight_hi && lo == hi) {
      add(lo, hi, true, true);
    } else {
      add(lo, tight_lo ? lo : -1, true, false);
      add(hi, tight_hi ? hi : -1, false, true);
      add(tight_lo ? lo + 1 : lo, tight_hi ? hi - 1 : hi, false, false);
    }
    return {alternatives, can_end};
  }

  std::string a_;
  std::optional<std::string> b_;
  bool a_exclusive_, b_exclusive_;
};

// Numbers of magnitude from lo to hi (hi none: unbounded), their whole part W and fraction read apart:
// W == lo's (a fraction from lo's), lo's < W < hi's (any fraction), W == hi's (a fraction up to hi's);
// nullopt for none.
std::optional<std::string> magnitudes(const NumberBound& lo, const std::optional<NumberBound>& hi) {
  std::string r;
  auto part = [&r](uint64_t from, std::optional<uint64_t> to, const std::optional<std::string>& fraction) {  // (whole part)fraction
    if (fraction) r.append(r.empty() ? "(" : "|(").append(naturals(from, to)).append(")").append(*fraction);
  };
  if (hi && hi->whole == lo.whole) {
    part(lo.whole, lo.whole, FractionRegex(lo.fraction, lo.exclusive, hi->fraction, hi->exclusive).regex());
  } else {
    part(lo.whole, lo.whole, FractionRegex(lo.fraction, lo.exclusive, std::nullopt, false).regex());
    if (!hi || hi->whole > lo.whole + 1) part(lo.whole + 1, hi ? std::optional<uint64_t>(hi->whole - 1) : std::nullopt, "(\\.[0-9]+)?");
    if (hi) part(hi->whole, hi->whole, FractionRegex("", false, hi->fraction, hi->exclusive).regex());
  }
  if (r.empty()) return std::nullopt;
  return r;
}
}  // namespace

NumberBound NumberBound::of(int64_t value, bool exclusive) {
  return NumberBound{value < 0, value < 0 ? uint64_t(-(value + 1)) + 1 : uint64_t(value), "", exclusive};
}

NumberBound NumberBound::parse(std::string_view text, bool exclusive) {
  NumberBound b;
  b.exclusive = exclusive;
  size_t i = 0;
  if (i < text.size() && text[i] == '-') b.negative = true, ++i;
  std::string digits;  // of the mantissa, the point at `point`
  size_t point = std::string::npos;
  for (; i < text.size() && text[i] != 'e' && text[i] != 'E'; ++i) {
    if (text[i] == '.') point = digits.size();
    else if (text[i] >= '0' && text[i] <= '9') digits += text[i];
    else fail("'", text, "' is not a number");
  }
  if (digits.empty()) fail("'", text, "' is not a number");
  int64_t exponent = 0;
  if (i < text.size()) {
    const std::string e(text.substr(i + 1));
    try {
      exponent = std::stoll(e);
    } catch (const std::exception&) {
      fail("'", text, "' is not a number");
    }
    if (exponent < -1000 || exponent > 1000) fail("'", text, "' has more than ", kMaxFractionDigits, " digits after the point or too many before it");
  }
  int64_t whole_digits = int64_t(point == std::string::npos ? digits.size() : point) + exponent;
  if (whole_digits < 0) digits.insert(0, size_t(-whole_digits), '0'), whole_digits = 0;
  if (size_t(whole_digits) > digits.size()) digits.append(size_t(whole_digits) - digits.size(), '0');
  std::string whole = digits.substr(0, size_t(whole_digits));
  b.fraction = digits.substr(size_t(whole_digits));
  while (!b.fraction.empty() && b.fraction.back() == '0') b.fraction.pop_back();
  whole.erase(0, std::min(whole.find_first_not_of('0'), whole.size()));
  if (b.fraction.size() > kMaxFractionDigits || whole.size() > 19)
    fail("'", text, "' has more than ", kMaxFractionDigits, " digits after the point or too many before it");
  b.whole = whole.empty() ? 0 : std::stoull(whole);
  if (b.whole == 0 && b.fraction.empty()) b.negative = false;  // -0 is 0
  return b;
}

std::string NumberBound::text() const {
  std::string t = negative ? "-" : "";
  t += std::to_string(whole);
  if (!fraction.empty()) t += '.', t += fraction;
  return t;
}

int compare(const NumberBound& a, const NumberBound& b) {
  if (a.negative != b.negative) return a.negative ? -1 : 1;
  int magnitude = a.whole != b.whole ? (a.whole < b.whole ? -1 : 1) : 0;
  if (!magnitude) {  // fractions compare as digit strings, the shorter padded with zeros
    const size_t n = std::max(a.fraction.size(), b.fraction.size());
    const std::string fa = a.fraction + std::string(n - a.fraction.size(), '0'), fb = b.fraction + std::string(n - b.fraction.size(), '0');
    magnitude = fa.compare(fb) < 0 ? -1 : fa.compare(fb) > 0 ? 1 : 0;
  }
  return a.negative ? -magnitude : magnitude;
}

std::string integer_regex(std::optional<int64_t> lo, std::optional<int64_t> hi) {
  auto magnitude = [](int64_t v) { return NumberBound::of(v, false).whole; };
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
  const NumberBound zero = NumberBound::of(0, false);
  auto magnitude_of = [](NumberBound b) { return b.negative = false, b; };
  std::vector<std::string> parts;
  // x >= 0: magnitudes from lo (or 0) up to hi.
  if (!hi || compare(*hi, zero) > 0 || (compare(*hi, zero) == 0 && !hi->exclusive))
    if (auto r = magnitudes(lo && !lo->negative ? *lo : zero, hi)) parts.push_back(*r);
  // x < 0: magnitudes from -hi (or above 0) up to -lo.
  if (!lo || lo->negative) {
    const NumberBound least = hi && hi->negative ? magnitude_of(*hi) : NumberBound{false, 0, "", true};
    if (auto r = magnitudes(least, lo ? std::optional<NumberBound>(magnitude_of(*lo)) : std::nullopt)) parts.push_back("-(" + *r + ")");
  }
  if (parts.empty()) fail("no number is within the bounds");
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
  // Hints to forms and editors (pydantic writes them for SecretStr, bytes and Path): any string is one.
  if (format == "password" || format == "binary" || format == "path") return "";
  fail("'", std::string(format.substr(0, 64)), "' is not one of date-time, date, time, duration, email, hostname, ipv4, ipv6, uri, uuid (or binary, password, path: any string)");
}

}  // namespace skein
