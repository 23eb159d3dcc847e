#include "coordinator/json_grammar.h"

#include <algorithm>
#include <bit>
#include <functional>
#include <type_traits>

namespace skein {

namespace {
constexpr std::string_view kLiterals[] = {"true", "false", "null"};
bool is_digit(uint8_t b) { return b >= '0' && b <= '9'; }
bool is_hex(uint8_t b) { return is_digit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F'); }
}  // namespace

static_assert(std::is_trivially_default_constructible_v<JsonReading> && std::is_trivially_copyable_v<JsonReading>,
              "the recognizer keeps readings in a fixed array, copied only as far as they are used");

JsonReading JsonReading::start(const JsonSchema* schema) {
  JsonReading r{};  // zeros: Mode::Start, no containers open
  r.schema_ = schema;
  r.schema_id_ = schema ? schema->id() : 0;
  r.value_node_ = schema ? schema->root() : 0;
  return r;
}

bool JsonReading::push(uint8_t byte) {
  bool ok = false;
  switch (mode_) {
    case Mode::String:
      if (const StringPattern* p = string_pattern()) {
        if (byte == '"' && !p->can_end(pattern_state_, pos_)) return false;
        if (byte == '\\' && !escape_possible(*p)) return false;
      } else if (const JsonSchema::Node* n = string_node(); n && n->limited()) {
        // pos_ counts the characters so far: each byte read in this mode but the closing quote begins one.
        // Without a maximum it stops at the minimum, so that longer strings share one state (and mask).
        if (byte == '"' ? pos_ < n->min_size : pos_ >= n->max_size) return false;
        if (byte != '"' && (pos_ < n->min_size || n->max_size != JsonSchema::kNoLimit)) ++pos_;
      }
      if (byte == '"') {
        if (key_) {  // a key of a dict, or of an object of any shape (its value may then be anything)
          key_ = false;
          mode_ = Mode::Colon;
          whitespace_ = 0;
          pos_ = pattern_state_ = 0;
          value_node_ = container() ? container()->children[0] : 0;
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
      if (ok && byte != '"' && byte != '\\') ok = step_pattern(byte);
      break;
    case Mode::Utf8:
      ok = byte >= lo_ && byte <= hi_ && step_pattern(byte);
      if (ok) {
        lo_ = 0x80, hi_ = 0xbf;
        if (--aux_ == 0) mode_ = Mode::String, lo_ = hi_ = 0;
      }
      break;
    case Mode::Escape:
      if (string_pattern()) {  // the escaped character is the pattern's next; no \u escapes, so each is one byte
        ok = unescaped(byte) && step_pattern(unescaped(byte));
        if (ok) mode_ = Mode::String;
        break;
      }
      ok = byte == 'u' || unescaped(byte);
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
      if (const StringPattern* bounds = number_pattern()) {  // a number with a minimum or maximum
        if (is_digit(byte) || byte == '-' || byte == '.') {
          ok = bounds->step(pattern_state_, pos_, byte);
        } else if (bounds->can_end(pattern_state_, pos_)) {
          end_value();
          ok = push_structural(byte);
        }
        break;
      }
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
          } else if (byte == '.' && !integer_ && (part == Zero || part == Integer)) {
            ok = true;
            aux_ = Dot, lo_ = 0;
          } else if ((byte == 'e' || byte == 'E') && !integer_ && part != ExponentDigits) {
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
    case Mode::Fixed:
      ok = step_fixed(byte);
      break;
    default:
      ok = push_structural(byte);
  }
  return ok;
}

bool JsonReading::push_structural(uint8_t byte) {
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
      return schema_ ? begin_value(byte) : byte == '{' && open(true, 0);
    case Mode::Value:
      return begin_value(byte);
    case Mode::ValueOrEnd:
      if (byte == ']') return close(false);
      if (const JsonSchema::Node* c = container(); c && !count_member(*c)) return false;  // the first item
      return begin_value(byte);
    case Mode::KeyOrEnd:
      if (byte == '}') return close(true);
      if (const JsonSchema::Node* c = container(); c && c->map && !count_member(*c)) return false;  // a dict's first key
      [[fallthrough]];
    case Mode::Key:
      if (container() && !container()->map) return begin_fixed(byte, true);  // one of the properties that may come next, by name
      if (byte != '"') return false;
      mode_ = Mode::String;
      key_ = true;
      return true;
    case Mode::Colon:
      if (byte != ':') return false;
      mode_ = Mode::Value;
      return true;
    case Mode::AfterValue: {
      const JsonSchema::Node* c = container();
      if (byte == ',') {
        if (c && in_object() && !c->map) {  // its properties, in order
          if (!key_candidates()) return false;
          mode_ = Mode::Key;
          return true;
        }
        const size_t index = props_[depth_ - 1];  // of the item that begins (exact among prefixItems)
        if (c && !count_member(*c)) return false;
        mode_ = in_object() ? Mode::Key : Mode::Value;
        value_node_ = c && !in_object() ? item_node(*c, index) : 0;  // a dict's value comes after its key
        return true;
      }
      return (byte == '}' || byte == ']') && close(byte == '}');
    }
    default:
      return false;
  }
}

bool JsonReading::begin_value(uint8_t byte) {
  if (const JsonSchema::Node* n = schema_node(value_node_)) {
    using Kind = JsonSchema::Kind;
    if (n->nullable && byte == 'n') return begin_literal(byte);
    switch (n->kind) {
      case Kind::Object: return byte == '{' && open(true, value_node_);
      case Kind::Array: return byte == '[' && open(false, value_node_);
      case Kind::String: break;
      case Kind::Number:
      case Kind::Integer:
        if (byte != '-' && !is_digit(byte)) return false;
        integer_ = n->kind == Kind::Integer;
        if (n->pattern) {  // its bounds read the number from its first byte
          if (!schema_->pattern(*n).step(pattern_state_, pos_, byte)) return false;
          mode_ = Mode::Number;
          return true;
        }
        break;
      case Kind::Boolean: return (byte == 't' || byte == 'f') && begin_literal(byte);
      case Kind::Null: return byte == 'n' && begin_literal(byte);
      case Kind::Enum: return begin_fixed(byte, false);
      case Kind::Any: break;
      case Kind::Union: return false;  // none of its branches fits this deep (they are opened before a value)
    }
    if (n->kind == Kind::String && byte != '"') return false;
  }
  if (byte == '{' || byte == '[') return open(byte == '{', 0);
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
  return begin_literal(byte);
}

bool JsonReading::begin_literal(uint8_t byte) {
  for (uint8_t i = 0; i < 3; ++i)
    if (byte == uint8_t(kLiterals[i][0])) {
      mode_ = Mode::Literal;
      aux_ = i;
      lo_ = 1;
      return true;
    }
  return false;
}

const JsonSchema::Node* JsonReading::string_node() const {
  if (!key_) return schema_node(value_node_);
  const JsonSchema::Node* c = container();  // a key in String mode: a dict's (or one of an object of any shape)
  return c && c->map ? schema_node(c->key) : nullptr;
}

const StringPattern* JsonReading::string_pattern() const {
  const JsonSchema::Node* n = string_node();
  return n && n->pattern ? &schema_->pattern(*n) : nullptr;
}

const StringPattern* JsonReading::number_pattern() const {
  const JsonSchema::Node* n = schema_node(value_node_);
  return n && n->pattern && (n->kind == JsonSchema::Kind::Integer || n->kind == JsonSchema::Kind::Number) ? &schema_->pattern(*n) : nullptr;
}

bool JsonReading::step_pattern(uint8_t byte) {
  const StringPattern* p = string_pattern();
  return !p || p->step(pattern_state_, pos_, byte);
}

uint8_t JsonReading::unescaped(uint8_t letter) {
  switch (letter) {
    case '"': return '"';
    case '\\': return '\\';
    case '/': return '/';
    case 'b': return '\b';
    case 'f': return '\f';
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    default: return 0;
  }
}

bool JsonReading::escape_possible(const StringPattern& p) const {
  for (uint8_t letter : {'"', '\\', '/', 'b', 'f', 'n', 'r', 't'})
    if (uint16_t state = pattern_state_, chars = pos_; p.step(state, chars, unescaped(letter))) return true;
  return false;
}

void JsonReading::end_value() {
  mode_ = depth_ == 0 ? Mode::Done : Mode::AfterValue;
  pos_ = 0;
  pattern_state_ = 0;
  aux_ = lo_ = hi_ = 0;
  whitespace_ = 0;
  integer_ = false;
  value_node_ = 0;
}

bool JsonReading::open(bool object, uint8_t node) {
  const JsonSchema::Node* n = schema_node(node);
  if (depth_ + (n ? n->min_depth : 1) > kMaxDepth) return false;  // its shortest text must fit too
  const uint64_t bit = uint64_t(1) << depth_;
  stack_ = object ? stack_ | bit : stack_ & ~bit;
  nodes_[depth_] = node;
  props_[depth_] = 0;
  ++depth_;
  mode_ = object ? Mode::KeyOrEnd : Mode::ValueOrEnd;
  value_node_ = !object && n ? item_node(*n, 0) : 0;  // an array's first item
  return true;
}

bool JsonReading::close(bool object) {
  if (depth_ == 0 || in_object() != object) return false;
  if (const JsonSchema::Node* c = container(); c && (object && !c->map ? required_left() : props_[depth_ - 1] < c->min_size)) return false;
  --depth_;
  stack_ &= (uint64_t(1) << depth_) - 1;  // levels above are unused (equal states compare equal)
  nodes_[depth_] = props_[depth_] = 0;
  used_ = 0;
  end_value();
  return true;
}

const JsonSchema::Node* JsonReading::pending_union() const {
  const JsonSchema::Node* n = schema_node(value_node_);
  return n && n->kind == JsonSchema::Kind::Union ? n : nullptr;
}

bool JsonReading::choose(uint8_t node) {
  if (schema_ && depth_ + schema_->node(node).min_depth > kMaxDepth) return false;
  value_node_ = node;
  return true;
}

const JsonSchema::Node* JsonReading::container() const { return depth_ ? schema_node(nodes_[depth_ - 1]) : nullptr; }

std::string_view JsonReading::fixed_text(int candidate) const {
  return key_ ? std::string_view(container()->keys[props_[depth_ - 1] + size_t(candidate)]) : std::string_view(schema_node(value_node_)->values[size_t(candidate)]);
}

// In an object with properties, props_ is the first property that may still come.
uint64_t JsonReading::key_candidates() const {
  const JsonSchema::Node& c = *container();
  uint64_t bits = 0;
  for (size_t i = props_[depth_ - 1], bit = 0; i < c.keys.size() && bit < 64; ++i, ++bit) {
    if (depth_ + schema_->node(c.children[i]).min_depth <= kMaxDepth) bits |= uint64_t(1) << bit;  // its value can close in time
    if (c.required[i]) break;  // none after it may come before it
  }
  return bits;
}

bool JsonReading::required_left() const {
  const JsonSchema::Node& c = *container();
  return std::find(c.required.begin() + props_[depth_ - 1], c.required.end(), true) != c.required.end();
}

uint8_t JsonReading::item_node(const JsonSchema::Node& array, size_t index) {
  return index + 1 < array.children.size() ? array.children[index + 1] : array.children[0];  // prefixItems, then items
}

// Counts a new item of an array or a dict (in props_) against its limits; false when none may come, by
// its maximum or because its shortest text would not close within kMaxDepth.
bool JsonReading::count_member(const JsonSchema::Node& c) {
  uint8_t& count = props_[depth_ - 1];
  if (depth_ + schema_->node(in_object() ? c.children[0] : item_node(c, count)).min_depth > kMaxDepth) return false;
  const size_t prefix = c.children.size() - 1;  // an array's prefixItems (a dict has none)
  if (!c.limited() && !prefix) return true;
  if (count >= c.max_size) return false;
  // Without a maximum, counting stops past the minimum and the prefix (as pos_), so longer ones share states.
  if (count < std::max<size_t>(c.min_size, prefix) || c.max_size != JsonSchema::kNoLimit) ++count;
  return true;
}

bool JsonReading::begin_fixed(uint8_t byte, bool key) {
  const size_t values = key ? 0 : schema_node(value_node_)->values.size();
  candidates_ = key ? key_candidates() : values == 64 ? ~uint64_t(0) : (uint64_t(1) << values) - 1;
  if (const JsonSchema::Node* c = container(); !key && c && c->unique) candidates_ &= ~used_;  // a set's item: a value not yet in it
  if (!candidates_) return false;
  key_ = key;
  mode_ = Mode::Fixed;
  pos_ = 0;
  return step_fixed(byte);
}

bool JsonReading::step_fixed(uint8_t byte) {
  uint64_t next = 0;
  bool ended = false;  // a candidate was whole before this byte
  for (int c = 0; c < 64; ++c) {
    if (!((candidates_ >> c) & 1)) continue;
    const std::string_view text = fixed_text(c);
    if (pos_ < text.size() && uint8_t(text[pos_]) == byte) next |= uint64_t(1) << c;
    ended |= pos_ == text.size();
  }
  if (!next) {
    if (!ended) return false;
    end_fixed();  // a number value ("1" of 1 and 10) ended before this byte
    return push_structural(byte);
  }
  candidates_ = next;
  ++pos_;
  bool whole = false, longer = false;
  for (int c = 0; c < 64; ++c)
    if ((candidates_ >> c) & 1) (fixed_text(c).size() == pos_ ? whole : longer) = true;
  if (whole && !longer) end_fixed();
  return true;
}

void JsonReading::end_fixed() {
  // The one whole: a key's closing quote ends it; of number values, 1 may end where 10 goes on.
  size_t chosen = size_t(std::countr_zero(candidates_));
  for (uint64_t left = candidates_; left; left &= left - 1)
    if (const int c = std::countr_zero(left); fixed_text(c).size() == pos_) chosen = size_t(c);
  candidates_ = 0;
  pos_ = 0;
  if (const JsonSchema::Node* c = container(); !key_ && c && c->unique) used_ |= uint64_t(1) << chosen;
  if (!key_) return end_value();
  key_ = false;
  mode_ = Mode::Colon;
  whitespace_ = 0;
  const size_t property = props_[depth_ - 1] + chosen;
  props_[depth_ - 1] = uint8_t(property + 1);  // those before it are left out
  value_node_ = container()->children[property];
}

size_t JsonReading::hash() const {
  uint64_t h = stack_;
  for (uint64_t v : {uint64_t(mode_), uint64_t(aux_), uint64_t(lo_), uint64_t(hi_), uint64_t(whitespace_), uint64_t(key_), uint64_t(surrogate_),
                     uint64_t(depth_), uint64_t(schema_id_), uint64_t(integer_), uint64_t(value_node_), uint64_t(pos_), uint64_t(pattern_state_), candidates_,
                     used_})
    h = (h ^ v) * 0x100000001b3ULL;
  for (int d = 0; schema_ && d < depth_; ++d) h = (h ^ (uint64_t(nodes_[size_t(d)]) << 8 | props_[size_t(d)])) * 0x100000001b3ULL;
  return std::hash<uint64_t>{}(h);
}

JsonRecognizer::JsonRecognizer(const JsonSchema* schema) { add(JsonReading::start(schema)); }

JsonRecognizer& JsonRecognizer::operator=(const JsonRecognizer& other) {
  count_ = other.count_;
  std::copy_n(other.readings_.begin(), count_, readings_.begin());
  return *this;
}

bool JsonRecognizer::advance(uint8_t byte) {
  if (count_ == 1) {  // the common case, in place
    if (!readings_[0].push(byte)) return false;
    if (readings_[0].pending_union()) {
      const JsonReading r = readings_[0];
      count_ = 0;
      add(r);
    }
    return true;
  }
  std::array<JsonReading, kMaxReadings> was;
  const uint8_t n = count_;
  std::copy_n(readings_.begin(), n, was.begin());
  count_ = 0;
  for (uint8_t i = 0; i < n; ++i)
    if (JsonReading r = was[i]; r.push(byte)) add(r);
  return count_ > 0;
}

bool JsonRecognizer::push(uint8_t byte) {
  const JsonRecognizer before = *this;
  if (advance(byte)) return true;
  *this = before;
  return false;
}

bool JsonRecognizer::push(std::string_view bytes) {
  for (char c : bytes)
    if (!advance(uint8_t(c))) return false;
  return true;
}

void JsonRecognizer::add(const JsonReading& r) {
  if (const JsonSchema::Node* u = r.pending_union()) {
    bool chosen = false;
    for (uint8_t branch : u->children)
      if (JsonReading b = r; b.choose(branch)) add(b), chosen = true;
    if (chosen) return;
    // No branch fits this deep: kept as it is, an array can still close (no value can begin).
  }
  for (uint8_t i = 0; i < count_; ++i)
    if (readings_[i] == r) return;
  if (count_ < kMaxReadings) readings_[count_++] = r;
}

bool JsonRecognizer::complete() const {
  for (uint8_t i = 0; i < count_; ++i)
    if (readings_[i].complete()) return true;
  return false;
}

bool JsonRecognizer::operator==(const JsonRecognizer& other) const {
  return count_ == other.count_ && std::equal(readings_.begin(), readings_.begin() + count_, other.readings_.begin());
}

size_t JsonRecognizer::hash() const {
  size_t h = count_;
  for (uint8_t i = 0; i < count_; ++i) h = (h ^ readings_[i].hash()) * 0x100000001b3ULL;
  return h;
}

}  // namespace skein
