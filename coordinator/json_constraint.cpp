#include "coordinator/json_constraint.h"

#include <algorithm>
#include <cstdio>

#include "common/error.h"

namespace skein {

namespace {
// States kept with their masks: the recurring ones (in a string, after a comma, at each depth) fit many
// times over; 256 masks of a 65536-token vocabulary are 2 MB.
constexpr size_t kCachedStates = 256;
}  // namespace

JsonVocabulary::JsonVocabulary(const Tokenizer& tok, int vocab) : vocab_(vocab), bytes_(size_t(std::max(0, vocab))) {
  const std::optional<int32_t> end = tok.end_of_text();
  for (int32_t t = 0; t < vocab; ++t)
    if (!(end && *end == t)) bytes_[size_t(t)] = generated_bytes(tok, std::span<const int32_t>(&t, 1));
  // Every byte a JSON text may need next must be a token by itself, or some state could have no token
  // that continues it (the tokenizers Skein reads all have the 256 bytes).
  std::vector<bool> single(256, false);
  for (const std::string& b : bytes_)
    if (b.size() == 1) single[uint8_t(b[0])] = true;
  for (int b = 0x20; b < 0xf5; ++b)  // printable ASCII and every byte of UTF-8 (a schema's names may need any)
    if (!single[size_t(b)] && b != 0x7f && b != 0xc0 && b != 0xc1) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", b);
      fail("JSON mode needs a token for every single byte, and the ", tok.name(), " vocabulary has none for byte ", hex);
    }

  // The trie, built from the tokens in byte order: a token shares its path with the previous one up to
  // their common prefix, and a node's children arrive in byte order.
  for (int32_t t = 0; t < vocab; ++t)
    if (!bytes_[size_t(t)].empty()) sorted_ids_.push_back(t);
  std::stable_sort(sorted_ids_.begin(), sorted_ids_.end(), [&](int32_t a, int32_t b) { return bytes_[size_t(a)] < bytes_[size_t(b)]; });
  nodes_.emplace_back();
  std::vector<int32_t> path = {0};      // path[d]: the node of the previous token's first d bytes
  std::vector<int32_t> last_child = {-1};  // per path node: its last child so far
  const std::string* previous = nullptr;
  for (size_t i = 0; i < sorted_ids_.size(); ++i) {
    const std::string& s = bytes_[size_t(sorted_ids_[i])];
    size_t common = 0;
    if (previous)
      while (common < s.size() && common < previous->size() && s[common] == (*previous)[common]) ++common;
    path.resize(common + 1);
    last_child.resize(common + 1);
    for (size_t d = common; d < s.size(); ++d) {
      const int32_t node = int32_t(nodes_.size());
      Node n;
      n.byte = uint8_t(s[d]);
      n.tokens_begin = n.tokens_end = int32_t(i);
      nodes_.push_back(n);
      const int32_t parent = path.back();
      if (last_child.back() < 0) nodes_[size_t(parent)].first_child = node;
      else nodes_[size_t(last_child.back())].next_sibling = node;
      last_child.back() = node;
      path.push_back(node);
      last_child.push_back(-1);
    }
    Node& end = nodes_[size_t(path.back())];
    if (end.tokens_begin == end.tokens_end) end.tokens_begin = int32_t(i);  // first token ending here
    end.tokens_end = int32_t(i) + 1;
    previous = &s;
  }
}

const std::string& JsonVocabulary::bytes(int32_t token) const {
  static const std::string none;
  return token >= 0 && token < vocab_ ? bytes_[size_t(token)] : none;
}

void JsonVocabulary::walk(int32_t node, const JsonRecognizer& state, std::vector<uint64_t>& mask) const {
  for (int32_t c = nodes_[size_t(node)].first_child; c >= 0; c = nodes_[size_t(c)].next_sibling) {
    const Node& n = nodes_[size_t(c)];
    JsonRecognizer next = state;
    if (!next.advance(n.byte)) continue;
    for (int32_t i = n.tokens_begin; i < n.tokens_end; ++i) {
      const int32_t t = sorted_ids_[size_t(i)];
      mask[size_t(t) / 64] |= uint64_t(1) << (t % 64);
    }
    if (n.first_child >= 0) walk(c, next, mask);
  }
}

const std::vector<uint64_t>& JsonVocabulary::allowed(const JsonRecognizer& state) {
  if (auto it = index_.find(state); it != index_.end()) {
    cache_.splice(cache_.end(), cache_, it->second);  // now the most recently used
    return it->second->second;
  }
  if (cache_.size() >= kCachedStates) {
    index_.erase(cache_.front().first);
    cache_.pop_front();
  }
  std::vector<uint64_t> mask((size_t(vocab_) + 63) / 64, 0);
  walk(0, state, mask);
  cache_.emplace_back(state, std::move(mask));
  index_[state] = std::prev(cache_.end());
  return cache_.back().second;
}

std::shared_ptr<JsonConstraint> JsonVocabulary::constraint(ResponseFormat format, const std::string& schema) {
  if (format == ResponseFormat::Text) return nullptr;
  if (format == ResponseFormat::JsonObject) return std::make_shared<JsonConstraint>(*this);
  return std::make_shared<JsonConstraint>(*this, compiled_schema(schema));
}

bool JsonConstraint::accept(int32_t token) {
  const std::string& b = vocabulary_.bytes(token);
  JsonRecognizer next = state_;
  if (b.empty() || !next.push(b)) return false;
  state_ = next;
  return true;
}

}  // namespace skein
