// Token sampling on the GPU, so a last stage returns token ids instead of [rows x vocab] logits. One
// block per row runs the official PIPELINE steps in the CPU reference's order (coordinator/sampler.cpp,
// sample_row) with its per-element arithmetic (kernels/sampling_math.h): penalties; greedy as the first maximal logit; else softmax (float exp, double sum),
// top-p, top-k, temperature, renormalise, and the first token whose cumulative probability exceeds u.
// Sorting is replaced by radix selection on the probabilities' bit patterns (non-negative floats order
// like their bits): the top-p cutoff is the largest probability c with mass(p >= c) >= top_p, found
// byte by byte from mass histograms; top-k keeps keys (probability bits, inverted token id) at or above
// the k-th largest, which is the CPU's order: descending probability, equal ones by ascending id. Sums are in
// double in another order than the CPU's, so a draw can differ only when u or top_p falls within
// rounding of a boundary.
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/sampling_math.h"

namespace skein::cuda {

namespace {

constexpr int kThreads = 1024;

struct Shared {
  double mass[256];
  int count[256];
  double part[kThreads];
  float fpart[32];
  int ipart[32];
  uint64_t prefix;
  double above;
  int need;
  int found;
};

// The block's maximum of one value per thread (float or int), in every thread.
template <typename T>
__device__ T block_max(T v, T (&partial)[32], T lowest) {
  for (int off = 16; off > 0; off /= 2) v = max(v, __shfl_xor_sync(0xffffffffu, v, off));
  __syncthreads();
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  T m = lowest;
  for (int w = 0; w < int(blockDim.x / 32); ++w) m = max(m, partial[w]);
  return m;
}
__device__ float block_max(float v, Shared& s) { return block_max(v, s.fpart, -INFINITY); }
__device__ int block_max_int(int v, Shared& s) { return block_max(v, s.ipart, INT_MIN); }

__device__ double block_sum(double v, Shared& s) {
  __syncthreads();
  s.part[threadIdx.x] = v;
  __syncthreads();
  double total = 0;
  for (int t = 0; t < int(blockDim.x); ++t) total += s.part[t];  // the same order in every thread
  return total;
}

__device__ uint32_t bits(float p) { return __float_as_uint(p); }

// The largest probability c with mass(p >= c) >= top_p; the largest probability when rounding keeps
// the total below top_p (as the CPU's cumulative sum then never reaches it).
__device__ float top_p_cutoff(const float* p, int V, float top_p, float largest, Shared& s) {
  if (threadIdx.x == 0) {
    s.prefix = 0;
    s.above = 0;
    s.found = 1;
  }
  uint32_t mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += blockDim.x) {
      s.mass[b] = 0;
      s.count[b] = 0;
    }
    __syncthreads();
    const uint32_t prefix = uint32_t(s.prefix);
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
      uint32_t k = bits(p[i]);
      if ((k & mask) != prefix) continue;
      int b = int((k >> shift) & 255u);
      atomicAdd(&s.mass[b], double(p[i]));
      atomicAdd(&s.count[b], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double acc = s.above;
      int chosen = -1, lowest = -1;
      for (int b = 255; b >= 0; --b) {
        if (s.count[b] == 0) continue;
        lowest = b;
        if (acc + s.mass[b] >= double(top_p)) {
          chosen = b;
          break;
        }
        acc += s.mass[b];
      }
      if (chosen < 0 && shift == 24) s.found = 0;  // the whole distribution sums below top_p
      if (chosen < 0) chosen = lowest;           // a later byte: rounding of the sums, take the bin's end
      s.prefix |= uint64_t(uint32_t(chosen) << shift);
      s.above = acc;
    }
    mask |= 255u << shift;
    __syncthreads();
    if (!s.found) return largest;
  }
  return __uint_as_float(uint32_t(s.prefix));
}

// A token's top-k key: probability bits, then the inverted id so a lower id ranks first among equals.
__device__ uint64_t rank_key(float p, int i) { return (uint64_t(bits(p)) << 32) | uint32_t(~uint32_t(i)); }

// The k-th largest key; keys are distinct.
__device__ uint64_t kth_largest_key(const float* p, int V, int k, Shared& s) {
  __syncthreads();  // the top-p search's result may still be being read from s.prefix
  if (threadIdx.x == 0) {
    s.prefix = 0;
    s.need = k;
  }
  uint64_t mask = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += blockDim.x) s.count[b] = 0;
    __syncthreads();
    const uint64_t prefix = s.prefix;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
      uint64_t key = rank_key(p[i], i);
      if ((key & mask) == prefix) atomicAdd(&s.count[int((key >> shift) & 255u)], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int need = s.need, b = 255;
      for (; b > 0; --b) {
        if (s.count[b] >= need) break;
        need -= s.count[b];
      }
      s.need = need;
      s.prefix |= uint64_t(b) << shift;
    }
    mask |= uint64_t(255) << shift;
  }
  __syncthreads();
  return s.prefix;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(float* logits, int V, const SampleRow* rows, const Penalty* penalties, float* probs,
                                                          int32_t* out) {
  __shared__ Shared s;
  const SampleRow r = rows[blockIdx.x];
  float* l = logits + size_t(blockIdx.x) * size_t(V);
  float* p = probs + size_t(blockIdx.x) * size_t(V);
  const int tid = threadIdx.x, nt = blockDim.x;

  for (int i = r.penalty_begin + tid; i < r.penalty_end; i += nt) {  // one entry per token: no two threads share one
    Penalty q = penalties[i];
    if (q.token >= 0 && q.token < V) l[q.token] = math::penalized(l[q.token], q.amount);
  }
  __syncthreads();

  if (r.temperature == 0.0f) {  // the first maximal logit
    float best = block_max([&] {
      float m = -INFINITY;
      for (int i = tid; i < V; i += nt) m = fmaxf(m, l[i]);
      return m;
    }(), s);
    int first = V;
    for (int i = tid; i < V; i += nt)
      if (l[i] == best) {
        first = i;
        break;
      }
    int idx = -block_max_int(-first, s);
    if (tid == 0) out[blockIdx.x] = idx < V ? idx : 0;
    return;
  }

  float mx = -INFINITY;
  for (int i = tid; i < V; i += nt) mx = fmaxf(mx, l[i]);
  mx = block_max(mx, s);
  double sum = 0;
  for (int i = tid; i < V; i += nt) {
    float e = math::softmax_numerator(l[i], mx);
    p[i] = e;
    sum += e;
  }
  sum = block_sum(sum, s);
  float largest = 0;
  for (int i = tid; i < V; i += nt) {
    p[i] = math::normalized(p[i], sum);
    largest = fmaxf(largest, p[i]);
  }
  largest = block_max(largest, s);
  __syncthreads();

  const float cutoff = r.top_p < 1.0f ? top_p_cutoff(p, V, r.top_p, largest, s) : 0.0f;
  const bool use_k = r.top_k > 0 && r.top_k < V;
  const uint64_t kth = use_k ? kth_largest_key(p, V, r.top_k, s) : 0;
  __syncthreads();
  double total = 0;
  for (int i = tid; i < V; i += nt) {
    float q = p[i];
    if (q < cutoff) q = 0.0f;
    if (use_k && rank_key(p[i], i) < kth) q = 0.0f;
    if (r.temperature != 1.0f) q = math::tempered(q, r.temperature);
    p[i] = q;
    total += q;
  }
  total = block_sum(total, s);

  // The draw: each thread a contiguous range of ids, so a prefix sum over threads gives every id's
  // cumulative probability in id order.
  const int chunk = (V + nt - 1) / nt, i0 = min(V, tid * chunk), i1 = min(V, i0 + chunk);
  double mine = 0;
  int last = -1;
  for (int i = i0; i < i1; ++i) {
    float q = math::normalized(p[i], total);
    p[i] = q;
    if (q > 0.0f) {
      mine += q;
      last = i;
    }
  }
  __syncthreads();
  s.part[tid] = mine;
  if (tid == 0) s.found = V;
  __syncthreads();
  double base = 0;
  for (int t = 0; t < tid; ++t) base += s.part[t];
  if (r.u < base + mine) {
    double cum = base;
    for (int i = i0; i < i1; ++i) {
      if (p[i] <= 0.0f) continue;
      cum += p[i];
      if (r.u < cum) {
        atomicMin(&s.found, i);
        break;
      }
    }
  }
  int last_positive = block_max_int(last, s);
  __syncthreads();
  if (tid == 0) out[blockIdx.x] = s.found < V ? s.found : (last_positive >= 0 ? last_positive : 0);
}

}  // namespace

void sample(float* logits, int n, int V, const SampleRow* rows, const Penalty* penalties, float* probs, int32_t* tokens) {
  if (n <= 0) return;
  sample_kernel<<<n, kThreads, 0, stream()>>>(logits, V, rows, penalties, probs, tokens);
  check_launch("sample");
}

}  // namespace skein::cuda
