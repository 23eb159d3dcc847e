#include "coordinator/string_pattern.h"

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <tuple>
#include <utility>

#include "common/error.h"
#include "coordinator/regex_syntax.h"

namespace skein {

namespace {
constexpr size_t kMaxNfaStates = 200000;
static_assert(StringPattern::kMaxStates <= INT16_MAX, "states are int16_t");

// What a generated JSON string can hold: characters but surrogates, and of the control characters only
// those with a short escape (\b \t \n \f \r; the recognizer takes no \u escape in a patterned string).
const CodePoints& writable() {
  static const CodePoints r = {{0x08, 0x0a}, {0x0c, 0x0d}, {0x20, 0x7e}, {0x80, 0xd7ff}, {0xe000, kMaxCodePoint}};
  return r;
}

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
std::pair<uint32_t, uint32_t> build(const std::vector<RegexNode>& ast, size_t id, Nfa& nfa) {
  const RegexNode& a = ast[id];
  const uint32_t start = nfa.add();
  uint32_t at = start;
  switch (a.kind) {
    case RegexNode::Chars: {
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
    case RegexNode::Concat:
      for (size_t kid : a.kids) {
        auto [s, e] = build(ast, kid, nfa);
        nfa.empty[at].push_back(s);
        at = e;
      }
      return {start, at};
    case RegexNode::Alternate: {
      const uint32_t end = nfa.add();
      for (size_t kid : a.kids) {
        auto [s, e] = build(ast, kid, nfa);
        nfa.empty[start].push_back(s);
        nfa.empty[e].push_back(end);
      }
      return {start, end};
    }
    case RegexNode::Repeat: {
      for (uint32_t i = 0; i < a.min; ++i) {
        auto [s, e] = build(ast, a.kids[0], nfa);
        nfa.empty[at].push_back(s);
        at = e;
      }
      if (a.max == RegexNode::kUnbounded) {
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

StringPattern::StringPattern(std::string_view regex, uint32_t min_chars, uint32_t max_chars, size_t* work_left, uint32_t multiple_of,
                             uint32_t fraction_digits)
    : min_(min_chars), max_(max_chars) {
  size_t own_work = kMaxWork;
  size_t& left = work_left ? *work_left : own_work;
  auto spend = [&left](size_t steps) {
    if (steps > left) fail("too complex: the schema's patterns, formats and bounds take more than ", kMaxWork, " steps to compile");
    left -= steps;
  };
  const Regex parsed = parse_regex(regex);
  Nfa nfa;
  const auto [nfa_start, nfa_accept] = build(parsed.nodes, parsed.root, nfa);

  // Byte classes: bytes no edge tells apart, kept apart where a character begins or continues.
  bool boundary[257] = {};
  boundary[0] = boundary[0x80] = boundary[0xc0] = true;
  for (const auto& edges : nfa.edges)
    for (const Nfa::Edge& e : edges) boundary[e.lo] = boundary[size_t(e.hi) + 1] = true;
  if (multiple_of) {  // each digit moves the remainder its own way, and the point changes how
    for (int d = '0'; d <= '9' + 1; ++d) boundary[d] = true;
    boundary['.'] = boundary['.' + 1] = true;
  }
  uint8_t representative[256];
  for (int b = 0; b < 256; ++b) {
    if (b > 0 && boundary[b]) ++classes_;
    if (b == 0 || boundary[b]) representative[classes_] = uint8_t(b);
    class_of_[b] = uint8_t(classes_);
    class_starts_[classes_] = b < 0x80 || b >= 0xc0;
  }
  ++classes_;

  // Subset construction: state 0 is the start. A state is a set of NFA states and, with multiple_of m,
  // the remainder mod m of the value so far times 10^fraction_digits and the digits past the point plus
  // one (0: no point yet). Before the point a digit d makes r 10r + d 10^k; the j-th after it adds
  // d 10^(k-j); past the k-th only a 0 may come.
  struct Key {
    std::vector<uint32_t> set;
    uint32_t remainder;
    uint32_t phase;
    bool operator<(const Key& o) const { return std::tie(set, remainder, phase) < std::tie(o.set, o.remainder, o.phase); }
  };
  std::vector<uint64_t> scale(size_t(fraction_digits) + 1, 1 % std::max<uint32_t>(multiple_of, 1));  // [j]: 10^j mod m
  for (size_t j = 1; j < scale.size() && multiple_of; ++j) scale[j] = scale[j - 1] * 10 % multiple_of;
  auto move = [&](uint32_t remainder, uint32_t phase, uint8_t b) -> std::optional<std::pair<uint32_t, uint32_t>> {
    if (!multiple_of) return std::pair{remainder, phase};
    if (b == '.') return std::pair{remainder, 1u};
    if (b < '0' || b > '9') return std::pair{remainder, phase};
    const uint64_t d = b - '0';
    if (phase == 0) return std::pair{uint32_t((uint64_t(remainder) * 10 + d * scale[fraction_digits]) % multiple_of), 0u};
    if (phase > fraction_digits) return d == 0 ? std::optional(std::pair{remainder, phase}) : std::nullopt;
    return std::pair{uint32_t((remainder + d * scale[fraction_digits - phase]) % multiple_of), phase + 1};
  };
  std::map<Key, int32_t> ids;  // each DFA state's key, kept once: `sets` points at them
  Closure closure(nfa);
  std::vector<const Key*> sets{&ids.try_emplace(Key{closure({nfa_start}), 0, 0}, 0).first->first};
  for (size_t s = 0; s < sets.size(); ++s) {
    const auto& [from, remainder, phase] = *sets[s];
    accepting_.push_back(remainder == 0 && std::binary_search(from.begin(), from.end(), nfa_accept));
    for (size_t k = 0; k < classes_; ++k) {
      const uint8_t b = representative[k];
      std::vector<uint32_t> to;
      for (uint32_t n : from) {
        spend(1 + nfa.edges[n].size());
        for (const Nfa::Edge& e : nfa.edges[n])
          if (b >= e.lo && b <= e.hi) to.push_back(e.to);
      }
      const auto moved = move(remainder, phase, b);
      if (to.empty() || !moved) {
        next_.push_back(-1);
        continue;
      }
      to = closure(std::move(to));
      spend(to.size());
      auto [it, added] = ids.try_emplace(Key{std::move(to), moved->first, moved->second}, int32_t(sets.size()));
      if (added) {
        if (sets.size() >= kMaxStates && multiple_of) fail("needs more than ", kMaxStates, " automaton states (multipleOf ", multiple_of, " times the states of its bounds)");
        if (sets.size() >= kMaxStates) fail("needs more than ", kMaxStates, " automaton states (a long counted repeat such as .{0,1000} is cheaper as maxLength)");
        sets.push_back(&it->first);
      }
      next_.push_back(int16_t(it->second));
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
  if (!finishable(0, 0) && multiple_of) fail("no multiple of multipleOf is within the bounds");
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

}  // namespace skein
