#include "coordinator/prefix_cache.h"

#include <algorithm>

#include "common/hash.h"

namespace skein {

namespace {
constexpr size_t kMaxSeen = 1 << 20;  // remembered boundaries; forgotten all at once past this
}

PrefixCache::PrefixCache(size_t capacity_bytes, int block_tokens) : capacity_(capacity_bytes), block_(size_t(std::max(1, block_tokens))) {}

uint64_t PrefixCache::hash(uint64_t origin, std::span<const int32_t> tokens) {
  Fnv64 h;
  h.update_value(origin);
  h.update(tokens.data(), tokens.size_bytes());
  h.update_value(tokens.size());
  return h.digest();
}

PrefixCache::Hit PrefixCache::lookup(uint64_t origin, std::span<const int32_t> prompt) {
  if (!enabled() || prompt.size() < 2) return {};
  ++stats_.lookups;
  stats_.looked_up_tokens += prompt.size();
  for (size_t n = (prompt.size() - 1) / block_ * block_; n > 0; n -= block_) {
    auto it = index_.find(hash(origin, prompt.first(n)));
    if (it == index_.end() || it->second->origin != origin || !std::equal(it->second->tokens.begin(), it->second->tokens.end(), prompt.begin(), prompt.begin() + long(n)) ||
        it->second->tokens.size() != n)
      continue;
    lru_.splice(lru_.begin(), lru_, it->second);
    ++stats_.hits;
    stats_.hit_tokens += n;
    return {n, &lru_.front().state};
  }
  return {};
}

size_t PrefixCache::snapshot_point(uint64_t origin, std::span<const int32_t> prompt, size_t already_cached) {
  if (!enabled() || prompt.size() < 2) return 0;
  size_t point = 0;
  std::vector<uint64_t> hashes;
  for (size_t n = block_; n <= prompt.size() - 1; n += block_) {
    uint64_t h = hash(origin, prompt.first(n));
    hashes.push_back(h);
    if (n > already_cached && seen_.count(h) && !index_.count(h)) point = n;
  }
  if (seen_.size() + hashes.size() > kMaxSeen) seen_.clear();
  seen_.insert(hashes.begin(), hashes.end());
  return point;
}

void PrefixCache::insert(uint64_t origin, std::span<const int32_t> prefix, std::vector<float> state) {
  const size_t bytes = state.size() * sizeof(float) + prefix.size_bytes();
  if (!enabled() || bytes > capacity_) return;
  uint64_t h = hash(origin, prefix);
  if (index_.count(h)) return;
  while (!lru_.empty() && stats_.bytes + bytes > capacity_) {
    Entry& last = lru_.back();
    stats_.bytes -= last.state.size() * sizeof(float) + last.tokens.size() * sizeof(int32_t);
    index_.erase(hash(last.origin, last.tokens));
    lru_.pop_back();
    ++stats_.evictions;
  }
  lru_.push_front({origin, std::vector<int32_t>(prefix.begin(), prefix.end()), std::move(state)});
  index_[h] = lru_.begin();
  stats_.bytes += bytes;
  ++stats_.inserts;
}

PrefixCacheStats PrefixCache::stats() const {
  PrefixCacheStats s = stats_;
  s.entries = lru_.size();
  return s;
}

}  // namespace skein
