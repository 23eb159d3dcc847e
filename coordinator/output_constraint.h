// What a request may generate, when it is more than "any token" (structured output: JSON mode). The
// scheduler asks it for the tokens allowed next before every draw, sends them with the step to where
// sampling happens (every other token is banned there), and tells it each token drawn.
#pragma once
#include <cstdint>
#include <vector>

namespace skein {

// Why a constrained generation failed when a drawn token broke its rule: only non-finite logits make a
// sampler leave its mask.
inline constexpr const char* kDrawnOutsideTheFormat = "the model drew a token outside the requested JSON (are its logits finite?)";

class OutputConstraint {
 public:
  virtual ~OutputConstraint() = default;
  // Bit t of word t / 64: token t may come next. Never empty while !complete().
  virtual const std::vector<uint64_t>& allowed() = 0;
  // The token drawn; false (nothing changes) for one allowed() did not allow.
  virtual bool accept(int32_t token) = 0;
  // The output is whole: the request ends here.
  virtual bool complete() const = 0;
};

}  // namespace skein
