// A JSON Schema string's `pattern` (coordinator/regex_syntax) or `format` (coordinator/value_regexes),
// with its minLength and maxLength, compiled for constrained generation: a deterministic automaton over
// the UTF-8 bytes of the string's characters (as they are once JSON escapes are read), with what it takes
// to tell, for each state and character count, whether an allowed string can still be finished. The JSON
// recognizer steps it byte by byte and never takes a byte after which none can, so a constrained string
// never dead-ends. An integer's or number's bounds are compiled the same way, over the number's text,
// and its multipleOf too: each state then also holds the remainder of the value so far (scaled to a
// whole number) and how many digits came after the point.
// Characters a JSON string cannot hold raw and that have no short escape (U+0000-U+001F but \b \t \n \f
// \r, and U+007F) are never generated: a pattern that needs one matches nothing here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace skein {

class StringPattern {
 public:
  static constexpr uint32_t kNoLimit = UINT32_MAX;
  static constexpr size_t kMaxStates = 4096;              // of the automaton
  static constexpr size_t kMaxTable = size_t(1) << 20;    // automaton states x character counts below minLength

  // Steps of compiling (automaton moves and table cells looked at) one schema may spend on all of its
  // patterns, so that no request can hold the server for long: about 0.1 s on one core.
  static constexpr size_t kMaxWork = size_t(12) << 20;

  // Throws skein::Error saying what is wrong (the schema adds where). `work_left` (the schema's; null:
  // kMaxWork for this one) is lowered by the steps this pattern took; past 0 it throws. With
  // `multiple_of` m > 0, an allowed text is a decimal number that is a multiple of m / 10^fraction_digits
  // (after that many digits past its point, only zeros may come).
  StringPattern(std::string_view regex, uint32_t min_chars, uint32_t max_chars, size_t* work_left = nullptr, uint32_t multiple_of = 0,
                uint32_t fraction_digits = 0);
  // A string begins in state 0 with 0 characters. `byte` (of a character's UTF-8) after `state` with
  // `chars` characters so far: true, both updated, when an allowed string can still be finished after it.
  bool step(uint16_t& state, uint16_t& chars, uint8_t byte) const;
  // The string may end here.
  bool can_end(uint16_t state, uint16_t chars) const;
  size_t states() const { return accepting_.size(); }
  size_t bytes() const { return next_.size() * sizeof(next_[0]) + shortest_.size() * sizeof(shortest_[0]) + (accepting_.size() + below_min_.size()) / 8; }

 private:
  // From `state` with `chars` characters, some allowed string can be finished: below the minimum, the
  // table says; from it on, only the maximum matters, and the shortest ending tells.
  bool finishable(uint32_t chars, size_t state) const {
    return chars < min_ ? below_min_[chars * states() + state] : shortest_[state] != kNoLimit && (max_ == kNoLimit || chars + shortest_[state] <= max_);
  }

  uint32_t min_, max_;  // without a maximum, character counts stop at min_ (the states beyond it alike)
  uint8_t class_of_[256];     // bytes that every state treats alike share a class
  bool class_starts_[256];    // the class's bytes begin a character
  size_t classes_ = 0;
  std::vector<int16_t> next_;  // [state * classes_ + class]: the next state, -1 for none (kMaxStates fits)
  std::vector<bool> accepting_;
  std::vector<uint32_t> shortest_;  // [state]: the fewest characters that end an allowed string; kNoLimit for none
  std::vector<bool> below_min_;     // [chars * states + state] for chars < min_
};

}  // namespace skein
