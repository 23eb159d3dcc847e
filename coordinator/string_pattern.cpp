#include "coordinator/string_pattern.h"

#include <algorithm>
#include <deque>
#include <map>
#include <utility>

#include "common/error.h"

namespace skein {

namespace {
using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;  // code points, inclusive
constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr uint32_t kInfinite = UINT32_MAX;
constexpr size_t kMaxNfaStates = 200000;

Ranges normalized(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (auto [lo, hi] : r) {
    if (!out.empty() && lo <= out.back().second + 1) out.back().second = std::max(out.back().second, hi);
    else out.push_back({lo, hi});
  }
  return out;
}

Ranges complement(const Ranges& r) {
  Ranges out;
  uint32_t from = 0;
  for (auto [lo, hi] : normalized(r)) {
    if (lo > from) out.push_back({from, lo - 1});
    from = hi + 1;
  }
  if (from <= kMaxCodePoint) out.push_back({from, kMaxCodePoint});
  return out;
}

Ranges intersection(const Ranges& a, const Ranges& b) {
  Ranges out;
  for (auto [alo, ahi] : a)
    for (auto [blo, bhi] : b)
      if (std::max(alo, blo) <= std::min(ahi, bhi)) out.push_back({std::max(alo, blo), std::min(ahi, bhi)});
  return normalized(out);
}

// What a generated JSON string can hold: characters but surrogates, and of the control characters only
// those with a short escape (\b \t \n \f \r; the recognizer takes no \u escape in a patterned string).
const Ranges& writable() {
  static const Ranges r = {{0x08, 0x0a}, {0x0c, 0x0d}, {0x20, 0x7e}, {0x80, 0xd7ff}, {0xe000, kMaxCodePoint}};
  return r;
}
const Ranges kDigit = {{'0', '9'}};
const Ranges kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
const Ranges kSpace = {{0x09, 0x0d}, {0x20, 0x20}, {0xa0, 0xa0}, {0x1680, 0x1680}, {0x2000, 0x200a}, {0x2028, 0x2029},
                       {0x202f, 0x202f}, {0x205f, 0x205f}, {0x3000, 0x3000}, {0xfeff, 0xfeff}};
const Ranges kLineEnds = {{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}};

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

// A parsed pattern: a tree of character sets, sequences, alternatives and repeats.
struct Ast {
  enum Kind : uint8_t { Chars, Concat, Alternate, Repeat } kind;
  Ranges chars;
  std::vector<size_t> kids;
  uint32_t min = 0, max = 0;  // Repeat; max kInfinite for no bound
};

class Parser {
 public:
  Parser(std::u32string text, std::vector<Ast>& nodes) : text_(std::move(text)), nodes_(nodes) {}

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
  size_t add(Ast a) {
    nodes_.push_back(std::move(a));
    return nodes_.size() - 1;
  }
  size_t chars(Ranges r) { return add(Ast{Ast::Chars, normalized(std::move(r)), {}, 0, 0}); }
  size_t any_string() { return add(Ast{Ast::Repeat, {}, {chars({{0, kMaxCodePoint}})}, 0, kInfinite}); }

  size_t alternation(bool top) {
    std::vector<size_t> alternatives{sequence(top)};
    while (eat('|')) alternatives.push_back(sequence(top));
    return alternatives.size() == 1 ? alternatives[0] : add(Ast{Ast::Alternate, {}, std::move(alternatives), 0, 0});
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
    return items.size() == 1 ? items[0] : add(Ast{Ast::Concat, {}, std::move(items), 0, 0});
  }

  bool quantifier_next() const { return peek() == '*' || peek() == '+' || peek() == '?' || peek() == '{'; }

  uint32_t number() {
    if (!(peek() >= '0' && peek() <= '9')) problem("'{' must begin {n}, {n,} or {n,m} (\\{ is the character)");
    uint64_t n = 0;
    while (peek() >= '0' && peek() <= '9') n = std::min<uint64_t>(n * 10 + (text_[pos_++] - '0'), uint64_t(StringPattern::kMaxRepeat) + 1);
    if (n > StringPattern::kMaxRepeat) problem(concat("a repeat count above ", StringPattern::kMaxRepeat));
    return uint32_t(n);
  }

  size_t quantified(size_t atom) {
    uint32_t min = 1, max = 1;
    if (eat('*')) min = 0, max = kInfinite;
    else if (eat('+')) min = 1, max = kInfinite;
    else if (eat('?')) min = 0, max = 1;
    else if (eat('{')) {
      min = max = number();
      if (eat(',')) max = peek() == '}' ? kInfinite : number();
      if (!eat('}')) problem("'{' must begin {n}, {n,} or {n,m} (\\{ is the character)");
      if (max < min) problem(concat("{", min, ",", max, "} counts down"));
    } else {
      return atom;
    }
    eat('?');  // lazy: the same strings
    if (quantifier_next()) problem("nothing to repeat");
    return add(Ast{Ast::Repeat, {}, {atom}, min, max});
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
  Ranges escape(bool in_class) {
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
  static Ranges single(uint32_t cp) { return {{cp, cp}}; }

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
  Ranges class_atom(bool& single) {
    if (at_end()) problem("'[' without its ']'");
    const char32_t c = text_[pos_++];
    Ranges r = c == '\\' ? escape(true) : Ranges{{c, c}};
    single = r.size() == 1 && r[0].first == r[0].second;
    return r;
  }

  size_t char_class() {
    const bool negated = eat('^');
    Ranges r;
    while (!eat(']')) {
      bool single = false;
      const size_t at = pos_;
      const Ranges low = class_atom(single);
      if (peek() == '-' && peek(1) != ']' && pos_ + 1 < text_.size()) {
        ++pos_;
        bool single_high = false;
        const Ranges high = class_atom(single_high);
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
  std::vector<Ast>& nodes_;
};

// A nondeterministic automaton over bytes (Thompson's construction).
struct Nfa {
  struct Edge {
    uint8_t lo, hi;
    uint32_t to;
  };
  std::vector<std::vector<Edge>> edges;
  std::vector<std::vector<uint32_t>> empty;  // moves that read nothing

  uint32_t add() {
    if (edges.size() >= kMaxNfaStates) fail("too large (its repeats expand to more than ", kMaxNfaStates, " automaton states)");
    edges.emplace_back();
    empty.emplace_back();
    return uint32_t(edges.size() - 1);
  }
};

using ByteSequence = std::vector<std::pair<uint8_t, uint8_t>>;

int utf8_length(uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

void utf8_encode(uint32_t cp, uint8_t* out) {
  const int n = utf8_length(cp);
  if (n == 1) {
    out[0] = uint8_t(cp);
    return;
  }
  for (int k = n - 1; k > 0; --k, cp >>= 6) out[k] = uint8_t(0x80 | (cp & 0x3f));
  out[0] = uint8_t((0xf00 >> n) | cp);
}

// The code points lo..hi (no surrogates among them) as sequences of byte ranges, one range per byte of
// their UTF-8: split where the encoded length changes and where a continuation byte cannot span its
// whole range (as RE2 and Rust's utf8-ranges do).
void utf8_sequences(uint32_t lo, uint32_t hi, std::vector<ByteSequence>& out) {
  for (uint32_t limit : {0x7fu, 0x7ffu, 0xffffu})
    if (lo <= limit && hi > limit) {
      utf8_sequences(lo, limit, out);
      utf8_sequences(limit + 1, hi, out);
      return;
    }
  const int n = utf8_length(lo);
  for (int i = 1; i < n; ++i) {
    const uint32_t m = (uint32_t(1) << (6 * i)) - 1;
    if ((lo & ~m) == (hi & ~m)) continue;
    if ((lo & m) != 0) {
      utf8_sequences(lo, lo | m, out);
      utf8_sequences((lo | m) + 1, hi, out);
      return;
    }
    if ((hi & m) != m) {
      utf8_sequences(lo, (hi & ~m) - 1, out);
      utf8_sequences(hi & ~m, hi, out);
      return;
    }
  }
  uint8_t a[4], b[4];
  utf8_encode(lo, a);
  utf8_encode(hi, b);
  ByteSequence s;
  for (int k = 0; k < n; ++k) s.push_back({a[k], b[k]});
  out.push_back(std::move(s));
}

// The automaton's (start, end) for `id`, built afresh each call (a bounded repeat builds its atom n times).
std::pair<uint32_t, uint32_t> build(const std::vector<Ast>& ast, size_t id, Nfa& nfa) {
  const Ast& a = ast[id];
  const uint32_t start = nfa.add();
  uint32_t at = start;
  switch (a.kind) {
    case Ast::Chars: {
      const uint32_t end = nfa.add();
      std::vector<ByteSequence> sequences;
      for (auto [lo, hi] : intersection(a.chars, writable())) utf8_sequences(lo, hi, sequences);
      for (const ByteSequence& s : sequences) {
        uint32_t from = start;
        for (size_t k = 0; k < s.size(); ++k) {
          const uint32_t to = k + 1 == s.size() ? end : nfa.add();
          nfa.edges[from].push_back({s[k].first, s[k].second, to});
          from = to;
        }
      }
      return {start, end};
    }
    case Ast::Concat:
      for (size_t kid : a.kids) {
        auto [s, e] = build(ast, kid, nfa);
        nfa.empty[at].push_back(s);
        at = e;
      }
      return {start, at};
    case Ast::Alternate: {
      const uint32_t end = nfa.add();
      for (size_t kid : a.kids) {
        auto [s, e] = build(ast, kid, nfa);
        nfa.empty[start].push_back(s);
        nfa.empty[e].push_back(end);
      }
      return {start, end};
    }
    case Ast::Repeat: {
      for (uint32_t i = 0; i < a.min; ++i) {
        auto [s, e] = build(ast, a.kids[0], nfa);
        nfa.empty[at].push_back(s);
        at = e;
      }
      if (a.max == kInfinite) {
        const uint32_t loop = nfa.add();
        nfa.empty[at].push_back(loop);
        auto [s, e] = build(ast, a.kids[0], nfa);
        nfa.empty[loop].push_back(s);
        nfa.empty[e].push_back(loop);
        return {start, loop};
      }
      const uint32_t end = nfa.add();
      for (uint32_t i = a.min; i < a.max; ++i) {
        nfa.empty[at].push_back(end);
        auto [s, e] = build(ast, a.kids[0], nfa);
        nfa.empty[at].push_back(s);
        at = e;
      }
      nfa.empty[at].push_back(end);
      return {start, end};
    }
  }
  return {start, at};
}

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

// The NFA states reachable from `set` by empty moves, sorted: a DFA state. Its marks are reused from
// call to call, so each costs what it finds, not the NFA's size.
class Closure {
 public:
  explicit Closure(const Nfa& nfa) : nfa_(nfa), mark_(nfa.edges.size(), 0) {}
  std::vector<uint32_t> operator()(std::vector<uint32_t> set) {
    ++round_;
    std::vector<uint32_t> stack;
    for (uint32_t s : set)
      if (mark_[s] != round_) mark_[s] = round_, stack.push_back(s);
    set = stack;
    while (!stack.empty()) {
      const uint32_t s = stack.back();
      stack.pop_back();
      for (uint32_t t : nfa_.empty[s])
        if (mark_[t] != round_) mark_[t] = round_, set.push_back(t), stack.push_back(t);
    }
    std::sort(set.begin(), set.end());
    return set;
  }

 private:
  const Nfa& nfa_;
  std::vector<uint32_t> mark_;
  uint32_t round_ = 0;
};
}  // namespace

StringPattern::StringPattern(std::string_view regex, uint32_t min_chars, uint32_t max_chars, size_t* work_left) : min_(min_chars), max_(max_chars) {
  size_t own_work = kMaxWork;
  size_t& left = work_left ? *work_left : own_work;
  auto spend = [&left](size_t steps) {
    if (steps > left) fail("too complex: the schema's patterns, formats and bounds take more than ", kMaxWork, " steps to compile");
    left -= steps;
  };
  std::vector<Ast> ast;
  const size_t root = Parser(code_points(regex), ast).parse();
  Nfa nfa;
  const auto [nfa_start, nfa_accept] = build(ast, root, nfa);

  // Byte classes: bytes no edge tells apart, kept apart where a character begins or continues.
  bool boundary[257] = {};
  boundary[0] = boundary[0x80] = boundary[0xc0] = true;
  for (const auto& edges : nfa.edges)
    for (const Nfa::Edge& e : edges) boundary[e.lo] = boundary[size_t(e.hi) + 1] = true;
  uint8_t representative[256];
  for (int b = 0; b < 256; ++b) {
    if (b > 0 && boundary[b]) ++classes_;
    if (b == 0 || boundary[b]) representative[classes_] = uint8_t(b);
    class_of_[b] = uint8_t(classes_);
    class_starts_[classes_] = b < 0x80 || b >= 0xc0;
  }
  ++classes_;

  // Subset construction: state 0 is the start.
  std::map<std::vector<uint32_t>, int32_t> ids;
  Closure closure(nfa);
  std::vector<std::vector<uint32_t>> sets{closure({nfa_start})};
  ids[sets[0]] = 0;
  for (size_t s = 0; s < sets.size(); ++s) {
    accepting_.push_back(std::binary_search(sets[s].begin(), sets[s].end(), nfa_accept));
    for (size_t k = 0; k < classes_; ++k) {
      const uint8_t b = representative[k];
      std::vector<uint32_t> to;
      for (uint32_t n : sets[s]) {
        spend(1 + nfa.edges[n].size());
        for (const Nfa::Edge& e : nfa.edges[n])
          if (b >= e.lo && b <= e.hi) to.push_back(e.to);
      }
      if (to.empty()) {
        next_.push_back(-1);
        continue;
      }
      to = closure(std::move(to));
      spend(to.size());
      auto [it, added] = ids.try_emplace(to, int32_t(sets.size()));
      if (added) {
        if (sets.size() >= kMaxStates) fail("needs more than ", kMaxStates, " automaton states (a long counted repeat such as .{0,1000} is cheaper as maxLength)");
        sets.push_back(to);
      }
      next_.push_back(it->second);
    }
  }

  // shortest_: back from the accepting states, a byte that begins a character costing one (0-1 BFS).
  std::vector<std::vector<std::pair<uint32_t, uint32_t>>> into(states());  // (from, class) of each state's moves in
  for (size_t from = 0; from < states(); ++from)
    for (size_t k = 0; k < classes_; ++k)
      if (const int32_t t = next_[from * classes_ + k]; t >= 0) into[size_t(t)].push_back({uint32_t(from), uint32_t(k)});
  spend(next_.size());
  shortest_.assign(states(), kNoLimit);
  std::deque<uint32_t> queue;
  for (size_t s = 0; s < states(); ++s)
    if (accepting_[s]) shortest_[s] = 0, queue.push_back(uint32_t(s));
  while (!queue.empty()) {
    const uint32_t t = queue.front();
    queue.pop_front();
    for (auto [from, k] : into[t]) {
      const uint32_t d = shortest_[t] + (class_starts_[k] ? 1 : 0);
      if (d >= shortest_[from]) continue;
      shortest_[from] = d;
      class_starts_[k] ? queue.push_back(from) : queue.push_front(from);
    }
  }
  // below_min_: level by level down from min_ - 1 (a character only ever raises the count): what leads,
  // through moves that begin a character, to a finishable state a level up, and back from those along
  // the moves that stay on the level.
  if (size_t(min_) * states() > kMaxTable)
    fail("its ", states(), " automaton states times minLength ", min_, " are above ", kMaxTable);
  below_min_.assign(size_t(min_) * states(), false);
  spend(below_min_.size() * classes_);
  for (uint32_t c = min_; c-- > 0;) {
    std::vector<uint32_t> found;
    auto mark = [&](size_t s) {
      if (!below_min_[c * states() + s]) below_min_[c * states() + s] = true, found.push_back(uint32_t(s));
    };
    for (size_t s = 0; s < states(); ++s) {
      bool ok = false;
      for (size_t k = 0; k < classes_ && !ok; ++k)
        if (const int32_t t = next_[s * classes_ + k]; t >= 0 && class_starts_[k] && (max_ == kNoLimit || c + 1 <= max_)) ok = finishable(c + 1, size_t(t));
      if (ok) mark(s);
    }
    while (!found.empty()) {
      const uint32_t t = found.back();
      found.pop_back();
      for (auto [from, k] : into[t])
        if (!class_starts_[k]) mark(from);
    }
  }
  if (!finishable(0, 0)) fail("no string a JSON string can hold matches it", min_ || max_ != kNoLimit ? " within minLength/maxLength" : "");
}

bool StringPattern::step(uint16_t& state, uint16_t& chars, uint8_t byte) const {
  const size_t k = class_of_[byte];
  const int32_t t = next_[size_t(state) * classes_ + k];
  if (t < 0) return false;
  uint32_t to = uint32_t(chars) + (class_starts_[k] ? 1 : 0);
  if (max_ == kNoLimit) to = std::min(to, min_);
  if (!finishable(to, size_t(t))) return false;
  state = uint16_t(t);
  chars = uint16_t(to);
  return true;
}

bool StringPattern::can_end(uint16_t state, uint16_t chars) const { return accepting_[state] && chars >= min_; }

std::string StringPattern::integer_regex(std::optional<int64_t> lo, std::optional<int64_t> hi) {
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

namespace {
// Numbers of magnitude from lo to hi (hi none: unbounded), their integer part I and fraction read apart:
// I == lo (a fraction of zeros only where lo == hi, a nonzero one where lo is exclusive), lo < I < hi
// (any fraction), I == hi (a fraction of zeros, where hi is inclusive).
std::string magnitudes(StringPattern::Bound lo, std::optional<StringPattern::Bound> hi) {
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

std::string StringPattern::number_regex(std::optional<Bound> lo, std::optional<Bound> hi) {
  std::vector<std::string> parts;
  // x >= 0: from lo (or 0) up to hi.
  if (!hi || hi->value > 0 || (hi->value == 0 && !hi->exclusive))
    if (std::string r = magnitudes(lo && lo->value >= 0 ? *lo : Bound{0, false}, hi); !r.empty()) parts.push_back(r);
  // x < 0: magnitudes from -hi (or above 0) up to -lo.
  if (!lo || lo->value < 0) {
    const Bound least = hi && hi->value < 0 ? Bound{-hi->value, hi->exclusive} : Bound{0, true};
    if (std::string r = magnitudes(least, lo ? std::optional<Bound>(Bound{-lo->value, lo->exclusive}) : std::nullopt); !r.empty())
      parts.push_back(r.insert(0, "-(").append(")"));
  }
  std::string r = "^(";
  for (size_t i = 0; i < parts.size(); ++i) r += (i ? "|" : "") + parts[i];
  return r + ")$";
}

std::string StringPattern::format_regex(std::string_view format, uint32_t& max_chars) {
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
  if (format == "uuid") return "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
  fail("'", std::string(format.substr(0, 64)), "' is not one of date-time, date, time, duration, email, hostname, ipv4, ipv6, uuid");
}

}  // namespace skein
