#include "kernels/cpu/wkv7_head.h"

#include <cstring>

#include "kernels/rwkv_math.h"

namespace skein::cpu {
namespace {

// Keys j0..j0+15 of a row: lane c is partial sum c of math::wkv7_row. A GCC/Clang vector extension,
// lowered to one AVX-512 register, two AVX ones, four SSE ones; scalar operands are broadcast, so
// math::wkv7_update runs on it unchanged.
typedef float Chunk __attribute__((vector_size(math::kWkv7Partials * sizeof(float))));
constexpr int kLanes = math::kWkv7Partials;

inline Chunk load(const float* p) {
  Chunk c;
  std::memcpy(&c, p, sizeof c);
  return c;
}
inline void store(float* p, const Chunk& c) { std::memcpy(p, &c, sizeof c); }

// Head size 16 * kChunks (64 in every released v7): the token's inputs stay in registers across the
// rows, where the general loop reloads them for each row (it cannot know S does not alias them), and
// kk * a is computed once a chunk, not once a row.
template <int kChunks>
void wkv7_head_in_registers(const float* r, const float* w, const float* k, const float* v, const float* kk, const float* a, float* S, float* y) {
  constexpr int N = kChunks * kLanes;
  Chunk rc[kChunks], wc[kChunks], kc[kChunks], kkc[kChunks], ac[kChunks];
  for (int c = 0; c < kChunks; ++c) {
    rc[c] = load(r + c * kLanes);
    wc[c] = load(w + c * kLanes);
    kc[c] = load(k + c * kLanes);
    kkc[c] = load(kk + c * kLanes);
    ac[c] = load(a + c * kLanes);
  }
  for (int i = 0; i < N; ++i) {
    float* Si = S + size_t(i) * N;
    Chunk s[kChunks], p = {}, q = {};
    for (int c = 0; c < kChunks; ++c) s[c] = load(Si + c * kLanes);
    for (int c = 0; c < kChunks; ++c) p += s[c] * kkc[c];
    const float sa = math::wkv7_sum16(p);
    for (int c = 0; c < kChunks; ++c) q += math::wkv7_update(s[c], v[i], sa, rc[c], wc[c], kc[c], kkc[c], ac[c]);
    for (int c = 0; c < kChunks; ++c) store(Si + c * kLanes, s[c]);
    y[i] = math::wkv7_sum16(q);
  }
}

}  // namespace

void wkv7_head(int N, const float* r, const float* w, const float* k, const float* v, const float* kk, const float* a, float* S, float* y) {
  if (N == 4 * kLanes) return wkv7_head_in_registers<4>(r, w, k, v, kk, a, S, y);
  const int full = N / kLanes * kLanes;  // keys in whole chunks; the rest go lane by lane
  for (int i = 0; i < N; ++i) {
    float* Si = S + size_t(i) * size_t(N);
    Chunk p = {};
    for (int j = 0; j < full; j += kLanes) p += load(Si + j) * load(kk + j);
    for (int j = full; j < N; ++j) p[j - full] += Si[j] * kk[j];
    const float sa = math::wkv7_sum16(p);
    Chunk q = {};
    for (int j = 0; j < full; j += kLanes) {
      Chunk s = load(Si + j);
      q += math::wkv7_update(s, v[i], sa, load(r + j), load(w + j), load(k + j), load(kk + j), load(a + j));
      store(Si + j, s);
    }
    for (int j = full; j < N; ++j) q[j - full] += math::wkv7_update(Si[j], v[i], sa, r[j], w[j], k[j], kk[j], a[j]);
    y[i] = math::wkv7_sum16(q);
  }
}

}  // namespace skein::cpu
