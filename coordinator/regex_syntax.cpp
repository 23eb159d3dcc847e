#include "coordinator/regex_syntax.h"

#include <algorithm>
#include <string>
#include <utility>

#include "common/error.h"

namespace skein {

namespace {
CodePoints normalized(CodePoints r) {
  std::sort(r.begin(), r.end());
  CodePoints out;
  for (auto [lo, hi] : r) {
    if (!out.empty() && lo <= out.back().second + 1) out.back().second = std::max(out.back().second, hi);
    else out.push_back({lo, hi});
  }
  return out;
}

CodePoints complement(const CodePoints& r) {
  CodePoints out;
  uint32_t from = 0;
  for (auto [lo, hi] : normalized(r)) {
    if (lo > from) out.push_back({from, lo - 1});
    from = hi + 1;
  }
  if (from <= kMaxCodePoint) out.push_back({from, kMaxCodePoint});
  return out;
}
}  // namespace

CodePoints intersection(const CodePoints& a, const CodePoints& b) {
  CodePoints out;
  for (auto [alo, ahi] : a)
    for (auto [blo, bhi] : b)
      if (std::max(alo, blo) <= std::min(ahi, bhi)) out.push_back({std::max(alo, blo), std::min(ahi, bhi)});
  return normalized(out);
}

namespace {
const CodePoints kDigit = {{'0', '9'}};
const CodePoints kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
const CodePoints kSpace = {{0x09, 0x0d}, {0x20, 0x20}, {0xa0, 0xa0}, {0x1680, 0x1680}, {0x2000, 0x200a}, {0x2028, 0x2029},
                           {0x202f, 0x202f}, {0x205f, 0x205f}, {0x3000, 0x3000}, {0xfeff, 0xfeff}};
const CodePoints kLineEnds = {{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}};

std::u32string code_points(std::string_view text) {
  std::u32string out;
  for (size_t i = 0; i < text.size();) {
    const auto b = uint8_t(text[i]);
    const int n = b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 0;
    if (n == 0 || i + size_t(n) > text.size()) fail("not valid UTF-8 at byte ", i);
    uint32_t cp = n == 1 ? b : b & (0x3f >> (n - 1));
    for (int k = 1; k < n; ++k) cp = cp << 6 | (uint8_t(text[i + size_t(k)]) & 0x3f);
    out.push_back(cp);
    i += size_t(n);
  }
  return out;
}

// The message where '{' begins no repeat count.
constexpr const char* kBadBrace = "'{' must begin {n}, {n,} or {n,m} (\\{ is the character)";

class Parser {
 public:
  Parser(std::u32string text, std::vector<RegexNode>& nodes) : text_(std::move(text)), nodes_(nodes) {}

  size_t parse() {
    const size_t root = alternation(true);
    if (pos_ < text_.size()) problem("')' without its '('");
    return root;
  }

 private:
  [[noreturn]] void problem(const std::string& what) const { fail("at character ", pos_, ": ", what); }
  bool at_end() const { return pos_ >= text_.size(); }
  char32_t peek(size_t ahead = 0) const { return pos_ + ahead < text_.size() ? text_[pos_ + ahead] : 0; }
  bool eat(char32_t c) {
    if (at_end() || text_[pos_] != c) return false;
    ++pos_;
    return true;
  }
  size_t add(RegexNode a) {
    nodes_.push_back(std::move(a));
    return nodes_.size() - 1;
  }
  size_t chars(CodePoints r) { return add(RegexNode{RegexNode::Chars, normalized(std::move(r)), {}, 0, 0}); }
  size_t any_string() { return add(RegexNode{RegexNode::Repeat, {}, {chars({{0, kMaxCodePoint}})}, 0, RegexNode::kUnbounded}); }

  size_t alternation(bool top) {
    std::vector<size_t> alternatives{sequence(top)};
    while (eat('|')) alternatives.push_back(sequence(top));
    return alternatives.size() == 1 ? alternatives[0] : add(RegexNode{RegexNode::Alternate, {}, std::move(alternatives), 0, 0});
  }

  // At the top level an alternative not anchored by ^ (or $) may begin (or end) anywhere in the string.
  size_t sequence(bool top) {
    std::vector<size_t> items;
    const bool anchored_start = top && eat('^');
    bool anchored_end = false;
    while (!at_end() && peek() != '|' && peek() != ')') {
      if (peek() == '^') problem("'^' is supported only at the start of the pattern or of a top-level alternative");
      if (peek() == '$') {
        ++pos_;
        if (top && (at_end() || peek() == '|')) {
          anchored_end = true;
          break;
        }
        --pos_;
        problem("'$' is supported only at the end of the pattern or of a top-level alternative");
      }
      items.push_back(quantified(atom()));
    }
    if (top && !anchored_start) items.insert(items.begin(), any_string());
    if (top && !anchored_end) items.push_back(any_string());
    return items.size() == 1 ? items[0] : add(RegexNode{RegexNode::Concat, {}, std::move(items), 0, 0});
  }

  bool quantifier_next() const { return peek() == '*' || peek() == '+' || peek() == '?' || peek() == '{'; }

  uint32_t number() {
    if (!(peek() >= '0' && peek() <= '9')) problem(kBadBrace);
    uint64_t n = 0;
    while (peek() >= '0' && peek() <= '9') n = std::min<uint64_t>(n * 10 + (text_[pos_++] - '0'), uint64_t(kMaxRepeat) + 1);
    if (n > kMaxRepeat) problem(concat("a repeat count above ", kMaxRepeat));
    return uint32_t(n);
  }

  size_t quantified(size_t atom) {
    uint32_t min = 1, max = 1;
    if (eat('*')) min = 0, max = RegexNode::kUnbounded;
    else if (eat('+')) min = 1, max = RegexNode::kUnbounded;
    else if (eat('?')) min = 0, max = 1;
    else if (eat('{')) {
      min = max = number();
      if (eat(',')) max = peek() == '}' ? RegexNode::kUnbounded : number();
      if (!eat('}')) problem(kBadBrace);
      if (max < min) problem(concat("{", min, ",", max, "} counts down"));
    } else {
      return atom;
    }
    eat('?');  // lazy: the same strings
    if (quantifier_next()) problem("nothing to repeat");
    return add(RegexNode{RegexNode::Repeat, {}, {atom}, min, max});
  }

  size_t atom() {
    const char32_t c = text_[pos_++];
    switch (c) {
      case '(': {
        if (eat('?')) {
          if (eat(':')) {
          } else if (peek() == '<' && peek(1) != '=' && peek(1) != '!') {  // a named group
            ++pos_;
            while (!at_end() && peek() != '>') ++pos_;
            if (!eat('>')) problem("a group name without its '>'");
          } else {
            problem("lookaround ((?=, (?!, (?<=, (?<!) is not supported");
          }
        }
        const size_t inner = alternation(false);
        if (!eat(')')) problem("'(' without its ')'");
        return inner;
      }
      case '[': return char_class();
      case '.': return chars(complement(kLineEnds));
      case '\\': return chars(escape(false));
      case '*':
      case '+':
      case '?':
      case '{': --pos_, problem("nothing to repeat");
      default: return chars({{c, c}});
    }
  }

  // The characters an escape stands for; in a class, \b is a backspace.
  CodePoints escape(bool in_class) {
    if (at_end()) problem("the pattern ends with a lone '\\'");
    const char32_t c = text_[pos_++];
    switch (c) {
      case 'd': return kDigit;
      case 'D': return complement(kDigit);
      case 'w': return kWord;
      case 'W': return complement(kWord);
      case 's': return kSpace;
      case 'S': return complement(kSpace);
      case 't': return {{'\t', '\t'}};
      case 'n': return {{'\n', '\n'}};
      case 'r': return {{'\r', '\r'}};
      case 'v': return {{'\v', '\v'}};
      case 'f': return {{'\f', '\f'}};
      case '0':
        if (peek() >= '0' && peek() <= '9') problem("octal escapes are not supported");
        return {{0, 0}};
      case 'b':
        if (in_class) return {{'\b', '\b'}};
        [[fallthrough]];
      case 'B': --pos_, problem("word boundaries (\\b, \\B) are not supported");
      case 'x': return single(hex(2));
      case 'u': {
        if (peek() == '{') problem("\\u{...} needs the u flag, which JSON Schema patterns do not have (write \\uHHHH)");
        uint32_t cp = hex(4);
        if (cp >= 0xd800 && cp <= 0xdbff && peek() == '\\' && peek(1) == 'u') {
          pos_ += 2;
          const uint32_t low = hex(4);
          if (low < 0xdc00 || low > 0xdfff) problem("a high surrogate not followed by a low one");
          cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        } else if (cp >= 0xd800 && cp <= 0xdfff) {
          problem("a lone surrogate");
        }
        return single(cp);
      }
      default:
        if (c >= '1' && c <= '9') --pos_, problem("backreferences are not supported");
        if (std::u32string_view(U"^$\\.*+?()[]{}|/-").find(c) != std::u32string_view::npos) return {{c, c}};
        --pos_;
        problem("'\\' before a character that ECMA-262 gives no meaning to");
    }
  }
  static CodePoints single(uint32_t cp) { return {{cp, cp}}; }

  uint32_t hex(int digits) {
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i, ++pos_) {
      const char32_t c = peek();
      const int d = c >= '0' && c <= '9' ? int(c - '0') : c >= 'a' && c <= 'f' ? int(c - 'a' + 10) : c >= 'A' && c <= 'F' ? int(c - 'A' + 10) : -1;
      if (d < 0) problem(concat("an escape needs ", digits, " hex digits"));
      v = v << 4 | uint32_t(d);
    }
    return v;
  }

  // One character of a class, or a set (\d); `single` says which.
  CodePoints class_atom(bool& single) {
    if (at_end()) problem("'[' without its ']'");
    const char32_t c = text_[pos_++];
    CodePoints r = c == '\\' ? escape(true) : CodePoints{{c, c}};
    single = r.size() == 1 && r[0].first == r[0].second;
    return r;
  }

  size_t char_class() {
    const bool negated = eat('^');
    CodePoints r;
    while (!eat(']')) {
      bool single = false;
      const size_t at = pos_;
      const CodePoints low = class_atom(single);
      if (peek() == '-' && peek(1) != ']' && pos_ + 1 < text_.size()) {
        ++pos_;
        bool single_high = false;
        const CodePoints high = class_atom(single_high);
        if (!single || !single_high) pos_ = at, problem("a class range needs a single character at each end");
        if (high[0].first < low[0].first) pos_ = at, problem("a class range out of order");
        r.push_back({low[0].first, high[0].first});
      } else {
        r.insert(r.end(), low.begin(), low.end());
      }
    }
    return chars(negated ? complement(r) : r);
  }

  std::u32string text_;
  size_t pos_ = 0;
  std::vector<RegexNode>& nodes_;
};

}  // namespace

Regex parse_regex(std::string_view pattern) {
  Regex r;
  r.root = Parser(code_points(pattern), r.nodes).parse();
  return r;
}

}  // namespace skein
