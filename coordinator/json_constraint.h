// JSON mode: a request's output is one JSON object. JsonVocabulary finds, for a JsonRecognizer state,
// every token whose bytes may come next, by one walk over a byte trie of the vocabulary (a token is
// allowed when all of its bytes are); the masks of states already seen are cached, since generation
// returns to a few states (inside a string, after a comma) again and again. JsonConstraint is one
// request's recognizer over it (of any JSON object, or of a JSON Schema's texts).
#pragma once
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "coordinator/json_grammar.h"
#include "coordinator/output_constraint.h"
#include "coordinator/sampler.h"
#include "model/tokenizer.h"

namespace skein {

class JsonConstraint;

class JsonVocabulary {
 public:
  // `vocab` is the model's output width (it may exceed the tokenizer's). Ids without text, and the
  // end-of-text token, are never allowed. Throws skein::Error when some byte JSON needs has no
  // single-byte token (then a constrained generation could reach a state no token continues).
  JsonVocabulary(const Tokenizer& tok, int vocab);
  int vocab() const { return vocab_; }
  const std::string& bytes(int32_t token) const;  // "" for ids without text
  // The tokens `state` allows next (bit t of word t / 64). Not thread-safe (the cache).
  const std::vector<uint64_t>& allowed(const JsonRecognizer& state);
  // A request's rule for its response format: null for text. Requests with the same schema text share
  // one compiled schema, so its states' masks are cached once. Throws skein::Error for a bad schema.
  std::shared_ptr<JsonConstraint> constraint(ResponseFormat format, const std::string& schema);

 private:
  struct Node {
    uint8_t byte = 0;
    int32_t first_child = -1, next_sibling = -1;
    int32_t tokens_begin = 0, tokens_end = 0;  // into sorted_ids_: the tokens whose bytes end here
  };
  void walk(int32_t node, const JsonRecognizer& state, std::vector<uint64_t>& mask) const;

  int vocab_;
  std::vector<std::string> bytes_;
  std::vector<int32_t> sorted_ids_;
  std::vector<Node> nodes_;  // nodes_[0] is the root (no bytes)
  struct Hash {
    size_t operator()(const JsonRecognizer& s) const { return s.hash(); }
  };
  // Least recently used state first; a cached mask is vocab / 8 bytes.
  std::list<std::pair<JsonRecognizer, std::vector<uint64_t>>> cache_;
  std::unordered_map<JsonRecognizer, decltype(cache_)::iterator, Hash> index_;
};

class JsonConstraint final : public OutputConstraint {
 public:
  explicit JsonConstraint(JsonVocabulary& vocabulary) : vocabulary_(vocabulary) {}
  // The texts of `schema` (kept alive here: the recognizer points into it).
  JsonConstraint(JsonVocabulary& vocabulary, std::shared_ptr<const JsonSchema> schema)
      : vocabulary_(vocabulary), schema_(std::move(schema)), state_(*schema_) {}
  const std::vector<uint64_t>& allowed() override { return vocabulary_.allowed(state_); }
  bool accept(int32_t token) override;
  bool complete() const override { return state_.complete(); }

 private:
  JsonVocabulary& vocabulary_;
  std::shared_ptr<const JsonSchema> schema_;
  JsonRecognizer state_;
};

}  // namespace skein
