// Prompt-prefix state cache. Many prompts share a prefix (a system prompt, a few-shot header, the
// history of a chat); for an RNN the prefix's whole effect is one state, so a cached state replaces
// prefilling the prefix. Prefixes are cut at multiples of `block` tokens; a prompt's boundaries are
// remembered (as hashes) when it is seen, and a boundary that a later prompt shares is where that
// prompt's state is snapshotted: a shared prefix is cached from its second use and hit from its third.
// Every prefix is keyed by the state it ran from (`origin`: 0 for the model's own start, else a tuned
// state's number), because the same tokens from another start state lead elsewhere.
#pragma once
#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace skein {

struct PrefixCacheStats {
  uint64_t lookups = 0, hits = 0, hit_tokens = 0, looked_up_tokens = 0, inserts = 0, evictions = 0;
  size_t entries = 0, bytes = 0;
};

class PrefixCache {
 public:
  PrefixCache(size_t capacity_bytes, int block_tokens);

  struct Hit {
    size_t tokens = 0;                        // prefix length (0: miss)
    const std::vector<float>* state = nullptr;  // valid until the next insert
  };
  // The longest cached prefix of `prompt` that leaves at least one token to run.
  Hit lookup(uint64_t origin, std::span<const int32_t> prompt);
  // Where to snapshot this prompt's state for later requests (0: nowhere, or already cached), then
  // remembers the prompt's boundaries.
  size_t snapshot_point(uint64_t origin, std::span<const int32_t> prompt, size_t already_cached);
  void insert(uint64_t origin, std::span<const int32_t> prefix, std::vector<float> state);

  bool enabled() const { return capacity_ > 0; }
  PrefixCacheStats stats() const;

 private:
  struct Entry {
    uint64_t origin = 0;
    std::vector<int32_t> tokens;  // compared in full: a hash collision never returns a wrong state
    std::vector<float> state;
  };
  static uint64_t hash(uint64_t origin, std::span<const int32_t> tokens);
  size_t capacity_;
  size_t block_;
  std::list<Entry> lru_;  // front: most recent
  std::unordered_map<uint64_t, std::list<Entry>::iterator> index_;
  std::unordered_set<uint64_t> seen_;
  PrefixCacheStats stats_;
};

}  // namespace skein
