#include "coordinator/json_grammar.h"

#include <functional>

namespace skein {

namespace {
constexpr std::string_view kLiterals[] = {"true", "false", "null"};
bool is_digit(uint8_t b) { return b >= '0' && b <= '9'; }
bool is_hex(uint8_t b) { return is_digit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F'); }
}  // namespace

bool JsonRecognizer::push(uint8_t byte) {
  const JsonRecognizer before = *this;
  bool ok = false;
  switch (mode_) {
    case Mode::String:
      if (byte == '"') {
        if (key_) {
          key_ = false;
          mode_ = Mode::Colon;
          whitespace_ = 0;
        } else {
          end_value();
        }
        ok = true;
      } else if (byte == '\\') {
        mode_ = Mode::Escape;
        ok = true;
      } else if (byte < 0x20 || byte == 0x7f) {
        ok = false;  // control characters must be escaped (DEL may be raw, but a model has no reason to write it)
      } else if (byte < 0x80) {
        ok = true;
      } else {
        // The first byte of a multi-byte character fixes how many follow and the next one's range
        // (no overlong forms, no surrogates, nothing above U+10FFFF).
        ok = true;
        mode_ = Mode::Utf8;
        lo_ = 0x80, hi_ = 0xbf;
        if (byte >= 0xc2 && byte <= 0xdf) aux_ = 1;
        else if (byte == 0xe0) aux_ = 2, lo_ = 0xa0;
        else if (byte == 0xed) aux_ = 2, hi_ = 0x9f;
        else if (byte >= 0xe1 && byte <= 0xef) aux_ = 2;
        else if (byte == 0xf0) aux_ = 3, lo_ = 0x90;
        else if (byte == 0xf4) aux_ = 3, hi_ = 0x8f;
        else if (byte >= 0xf1 && byte <= 0xf3) aux_ = 3;
        else ok = false;
      }
      break;
    case Mode::Utf8:
      ok = byte >= lo_ && byte <= hi_;
      if (ok) {
        lo_ = 0x80, hi_ = 0xbf;
        if (--aux_ == 0) mode_ = Mode::String, lo_ = hi_ = 0;
      }
      break;
    case Mode::Escape:
      ok = byte == '"' || byte == '\\' || byte == '/' || byte == 'b' || byte == 'f' || byte == 'n' || byte == 'r' || byte == 't' || byte == 'u';
      if (ok) mode_ = byte == 'u' ? Mode::Unicode : Mode::String;
      if (byte == 'u') aux_ = 4, surrogate_ = false;
      break;
    case Mode::Unicode:
      ok = is_hex(byte);
      if (ok && aux_ == 4) surrogate_ = byte == 'd' || byte == 'D';
      if (ok && aux_ == 3 && surrogate_) ok = is_digit(byte) && byte < '8';  // D0xx-D7xx: not a surrogate
      if (ok && --aux_ == 0) mode_ = Mode::String, surrogate_ = false;
      break;
    case Mode::Number:
      switch (NumberPart(aux_)) {
        case Minus:
          ok = is_digit(byte);
          aux_ = byte == '0' ? Zero : Integer;
          lo_ = 1;
          break;
        case Dot:
          ok = is_digit(byte);
          aux_ = Fraction;
          break;
        case Exponent:
          ok = is_digit(byte) || byte == '+' || byte == '-';
          aux_ = is_digit(byte) ? ExponentDigits : ExponentSign;
          lo_ = is_digit(byte) ? 1 : 0;
          break;
        case ExponentSign:
          ok = is_digit(byte);
          aux_ = ExponentDigits;
          lo_ = 1;
          break;
        case Zero:
        case Integer:
        case Fraction:
        case ExponentDigits: {
          const NumberPart part = NumberPart(aux_);
          if (is_digit(byte) && part != Zero) {
            ok = part == Fraction || lo_ < (part == Integer ? kMaxIntegerDigits : 2);
            if (ok && part != Fraction) ++lo_;
          } else if (byte == '.' && (part == Zero || part == Integer)) {
            ok = true;
            aux_ = Dot, lo_ = 0;
          } else if ((byte == 'e' || byte == 'E') && part != ExponentDigits) {
            ok = true;
            aux_ = Exponent, lo_ = 0;
          } else {  // the number ended before this byte, which must then follow a value
            end_value();
            ok = push_structural(byte);
          }
          break;
        }
      }
      break;
    case Mode::Literal: {
      const std::string_view word = kLiterals[aux_];
      ok = byte == uint8_t(word[lo_]);
      if (ok && ++lo_ == word.size()) {
        lo_ = 0;
        end_value();
      }
      break;
    }
    default:
      ok = push_structural(byte);
  }
  if (!ok) *this = before;
  return ok;
}

bool JsonRecognizer::push(std::string_view bytes) {
  for (char c : bytes)
    if (!push(uint8_t(c))) return false;
  return true;
}

bool JsonRecognizer::push_structural(uint8_t byte) {
  if (byte == ' ' || byte == '\t' || byte == '\n' || byte == '\r') {
    if (byte == '\n' && whitespace_ == 0) whitespace_ = 2;
    else if (byte == ' ' && whitespace_ == 0) whitespace_ = 1;
    else if ((byte == ' ' || byte == '\t') && whitespace_ >= 2 && whitespace_ < 2 + kMaxIndent) ++whitespace_;
    else return false;
    return true;
  }
  if (mode_ == Mode::Done) return false;
  whitespace_ = 0;
  switch (mode_) {
    case Mode::Start:
      return byte == '{' && open(true);
    case Mode::Value:
      return begin_value(byte);
    case Mode::ValueOrEnd:
      return byte == ']' ? close(false) : begin_value(byte);
    case Mode::KeyOrEnd:
      if (byte == '}') return close(true);
      [[fallthrough]];
    case Mode::Key:
      if (byte != '"') return false;
      mode_ = Mode::String;
      key_ = true;
      return true;
    case Mode::Colon:
      if (byte != ':') return false;
      mode_ = Mode::Value;
      return true;
    case Mode::AfterValue:
      if (byte == ',') {
        mode_ = in_object() ? Mode::Key : Mode::Value;
        return true;
      }
      return (byte == '}' || byte == ']') && close(byte == '}');
    default:
      return false;
  }
}

bool JsonRecognizer::begin_value(uint8_t byte) {
  if (byte == '{' || byte == '[') return open(byte == '{');
  if (byte == '"') {
    mode_ = Mode::String;
    key_ = false;
    return true;
  }
  if (byte == '-' || is_digit(byte)) {
    mode_ = Mode::Number;
    aux_ = byte == '-' ? Minus : byte == '0' ? Zero : Integer;
    lo_ = byte == '-' ? 0 : 1;
    return true;
  }
  for (uint8_t i = 0; i < 3; ++i)
    if (byte == uint8_t(kLiterals[i][0])) {
      mode_ = Mode::Literal;
      aux_ = i;
      lo_ = 1;
      return true;
    }
  return false;
}

void JsonRecognizer::end_value() {
  mode_ = depth_ == 0 ? Mode::Done : Mode::AfterValue;
  aux_ = lo_ = hi_ = 0;
  whitespace_ = 0;
}

bool JsonRecognizer::open(bool object) {
  if (depth_ >= kMaxDepth) return false;
  const uint64_t bit = uint64_t(1) << depth_;
  stack_ = object ? stack_ | bit : stack_ & ~bit;
  ++depth_;
  mode_ = object ? Mode::KeyOrEnd : Mode::ValueOrEnd;
  return true;
}

bool JsonRecognizer::close(bool object) {
  if (depth_ == 0 || in_object() != object) return false;
  --depth_;
  stack_ &= (uint64_t(1) << depth_) - 1;  // levels above are unused (equal states compare equal)
  end_value();
  return true;
}

size_t JsonRecognizer::hash() const {
  uint64_t h = stack_;
  for (uint64_t v : {uint64_t(mode_), uint64_t(aux_), uint64_t(lo_), uint64_t(hi_), uint64_t(whitespace_), uint64_t(key_), uint64_t(surrogate_),
                     uint64_t(depth_)})
    h = (h ^ v) * 0x100000001b3ULL;
  return std::hash<uint64_t>{}(h);
}

}  // namespace skein
