#include "worker/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "coordinator/sampler.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/wkv7_head.h"
#include "kernels/numeric.h"
#include "kernels/rwkv_math.h"
#include "model/weights.h"

namespace skein {

using namespace math;

namespace {
// Elementwise loops split across threads only when there is enough work to pay for the fork.
constexpr size_t kParallelMin = 1 << 16;
int threads_for(size_t work) { return work >= kParallelMin ? cpu::compute_threads() : 1; }

// y[i] = op(y[i] + bias[i]) (bias may be null) for T rows of n values, ldy apart. The operation and
// whether there is a bias are template arguments, so each loop is one activation with no per-element
// dispatch.
template <UnaryOp kOp, bool kBias>
void activate_rows(float* y, int64_t ldy, const float* bias, int T, size_t n) {
  auto one = [&](int t, size_t i) {
    float& v = y[size_t(t) * size_t(ldy) + i];
    v = math::activate(kOp, kBias ? v + bias[i] : v);
  };
  if (size_t(T) * n * 8 < kParallelMin) {  // no fork for a decode step's few values (an activation is ~8 adds)
    for (int t = 0; t < T; ++t)
      for (size_t i = 0; i < n; ++i) one(t, i);
    return;
  }
  // Threads take (row, block of a row) pairs: collapsing the element loop itself made each element
  // recover its row and column by division and left the loop scalar (ReLU² was 8% of a prefill).
  constexpr size_t kBlock = 4096;
  const size_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for collapse(2) num_threads(cpu::compute_threads()) schedule(static)
  for (int t = 0; t < T; ++t)
    for (size_t b = 0; b < blocks; ++b) {
      const size_t end = std::min(n, (b + 1) * kBlock);
      for (size_t i = b * kBlock; i < end; ++i) one(t, i);
    }
}
template <UnaryOp kOp>
void activate_rows(float* y, int64_t ldy, const float* bias, int T, size_t n) {
  if (bias) activate_rows<kOp, true>(y, ldy, bias, T, n);
  else activate_rows<kOp, false>(y, ldy, bias, T, n);
}
void activate_rows(UnaryOp op, float* y, int64_t ldy, const float* bias, int T, size_t n) {
  switch (op) {
    case UnaryOp::Sigmoid: return activate_rows<UnaryOp::Sigmoid>(y, ldy, bias, T, n);
    case UnaryOp::Silu: return activate_rows<UnaryOp::Silu>(y, ldy, bias, T, n);
    case UnaryOp::Tanh: return activate_rows<UnaryOp::Tanh>(y, ldy, bias, T, n);
    case UnaryOp::ReluSquare: return activate_rows<UnaryOp::ReluSquare>(y, ldy, bias, T, n);
    case UnaryOp::ExpNegExp: return activate_rows<UnaryOp::ExpNegExp>(y, ldy, bias, T, n);
    case UnaryOp::V7Decay: return activate_rows<UnaryOp::V7Decay>(y, ldy, bias, T, n);
  }
}
}  // namespace

float* CpuBackend::allocate(size_t n) {
  void* p = std::aligned_alloc(64, ((n * sizeof(float)) + 63) / 64 * 64);
  if (!p) throw std::bad_alloc();
  return static_cast<float*>(p);
}
void CpuBackend::release(float* p) { std::free(p); }
void CpuBackend::to_device(float* dst, const float* host, size_t n) { std::memcpy(dst, host, n * sizeof(float)); }
void CpuBackend::to_host(float* host, const float* src, size_t n) { std::memcpy(host, src, n * sizeof(float)); }
void CpuBackend::copy(float* dst, const float* src, size_t n) { std::memmove(dst, src, n * sizeof(float)); }
void CpuBackend::sample(float* logits, int n, int V, std::span<const SampleRequest> rows, int32_t* tokens) {
  for (int i = 0; i < n; ++i) tokens[i] = sample_row(logits + size_t(i) * size_t(V), V, rows[size_t(i)]);
}
void CpuBackend::gather_rows(const float* x, const int32_t* rows, int n, int C, float* out) {
  for (int i = 0; i < n; ++i) std::memmove(out + size_t(i) * C, x + size_t(rows[i]) * C, size_t(C) * sizeof(float));
}

void CpuBackend::embed(const ModelWeights& w, const int32_t* tokens, int T, float* x) {
  const int C = w.dims.n_embd;
  std::vector<float> row(size_t(C), 0.0f);
  for (int t = 0; t < T; ++t) {
    float* out = x + size_t(t) * C;
    if (w.emb_override) {
      std::memcpy(out, w.emb_override->data() + size_t(tokens[t]) * C, size_t(C) * sizeof(float));
      continue;
    }
    const uint8_t* src = w.emb.data + size_t(tokens[t]) * C * dtype_size(w.emb.dtype);
    for (int c = 0; c < C; ++c) {
      uint16_t h;
      switch (w.emb.dtype) {
        case DType::F32: std::memcpy(&row[c], src + 4 * size_t(c), 4); break;
        case DType::F16: std::memcpy(&h, src + 2 * size_t(c), 2); row[c] = fp16_to_float(h); break;
        case DType::BF16: std::memcpy(&h, src + 2 * size_t(c), 2); row[c] = bf16_to_float(h); break;
        case DType::U8: row[c] = float(src[c]); break;
      }
    }
    norm_row(row.data(), w.ln0_w.data(), w.ln0_b.data(), out, C, 1e-5f);
  }
}

void CpuBackend::layer_norm(const float* x, const Vector& w, const Vector& b, float* y, int T, int C) {
#pragma omp parallel for num_threads(threads_for(size_t(T) * C)) schedule(static)
  for (int t = 0; t < T; ++t) norm_row(x + size_t(t) * C, w.data(), b.data(), y + size_t(t) * C, C, 1e-5f);
}

void CpuBackend::group_norm(float* x, const Vector& w, const Vector& b, int T, int H, int N) {
  const size_t C = size_t(H) * N;
#pragma omp parallel for num_threads(threads_for(size_t(T) * C)) schedule(static)
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      float* p = x + t * C + size_t(h) * N;
      norm_row(p, w.data() + size_t(h) * N, b.data() + size_t(h) * N, p, N, 64e-5f);
    }
}

void CpuBackend::linear(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T, ProductOutput out) {
  if (out.kind != ProductOutput::Add) {
    cpu::linear(W, x, ldx, y, ldy, T);
    if (out.kind == ProductOutput::Activate) activate_rows(out.op, y, ldy, out.bias, T, size_t(W.rows));
    return;
  }
  // y += W x: the products go through a buffer, then one add per row.
  const size_t rows = size_t(W.rows);
  thread_local std::vector<float> sums;
  sums.resize(size_t(T) * rows);
  const float* s = sums.data();  // the caller's buffer (a thread_local named inside the region would be each thread's own)
  cpu::linear(W, x, ldx, sums.data(), int64_t(rows), T);
#pragma omp parallel for num_threads(threads_for(size_t(T) * rows)) schedule(static)
  for (int t = 0; t < T; ++t) {
    float* yt = y + size_t(t) * size_t(ldy);
    const float* st = s + size_t(t) * rows;
    for (size_t o = 0; o < rows; ++o) yt[o] += st[o];
  }
}

// The streamed products that write their y (stored or activated) in one parallel region; the rest (sgemm,
// or added to y) one by one.
void CpuBackend::linears(std::span<const Product> products, int T) {
  std::vector<cpu::StreamingProduct> streamed;
  std::vector<const Product*> activated;  // of the streamed ones
  for (const Product& p : products) {
    if (p.out.kind == ProductOutput::Add || !cpu::streams(*p.W, T)) {
      linear(*p.W, p.x, p.ldx, p.y, p.ldy, T, p.out);
      continue;
    }
    streamed.push_back({p.W, p.x, p.ldx, p.y, p.ldy});
    if (p.out.kind == ProductOutput::Activate) activated.push_back(&p);
  }
  cpu::linears_streaming(streamed.data(), int(streamed.size()), T);
  for (const Product* p : activated) activate_rows(p->out.op, p->y, p->ldy, p->out.bias, T, size_t(p->W->rows));
}

void CpuBackend::add(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}
void CpuBackend::mul(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] *= y[i];
}

void CpuBackend::token_shift(const float* xx, float* sx, std::span<const SeqSlice> seqs, int C) {
  const size_t c = size_t(C);
  for (const SeqSlice& q : seqs) {
    if (q.n <= 0) continue;
    const float* x = xx + size_t(q.offset) * c;
    float* s = sx + size_t(q.offset) * c;
    std::memcpy(s, q.state, c * sizeof(float));
    std::memcpy(s + c, x, size_t(q.n - 1) * c * sizeof(float));
    std::memcpy(q.state, x + size_t(q.n - 1) * c, c * sizeof(float));
  }
}

void CpuBackend::norm_shift_mix(const float* x, const Vector& ln_w, const Vector& ln_b, std::span<const SeqSlice> seqs,
                                std::span<const DeltaMix> mixes, int T, int C) {
  thread_local std::vector<float> xx, sx;
  xx.resize(size_t(T) * size_t(C));
  sx.resize(xx.size());
  layer_norm(x, ln_w, ln_b, xx.data(), T, C);
  token_shift(xx.data(), sx.data(), seqs, C);
  delta_mix(xx.data(), sx.data(), mixes, 0, T, C);
}

// Tokens in parallel, as delta_mix (v4/v5 prefill ran its four mixes a layer on one thread).
void CpuBackend::lerp_mix(const float* xx, const float* sx, const Vector& m, float* out, int T, int C) {
  const size_t c_count = size_t(C);
#pragma omp parallel for num_threads(threads_for(size_t(T) * c_count)) schedule(static)
  for (int t = 0; t < T; ++t) {
    const size_t row = size_t(t) * c_count;
    for (size_t c = 0; c < c_count; ++c) out[row + c] = math::lerp_mix(xx[row + c], sx[row + c], m[c]);
  }
}

// A token's row at a time, every mix of it in turn (its xx and sx read once from cache), tokens in parallel.
void CpuBackend::delta_mix(const float* xx, const float* sx, std::span<const DeltaMix> mixes, int64_t ld_tok, int T, int C) {
  const size_t c_count = size_t(C);
#pragma omp parallel for num_threads(threads_for(size_t(T) * c_count * mixes.size())) schedule(static)
  for (int t = 0; t < T; ++t) {
    const float *x = xx + size_t(t) * c_count, *s = sx + size_t(t) * c_count;
    for (const DeltaMix& d : mixes) {
      const float* m = d.m->data();
      float* out = d.out + size_t(t) * c_count;
      if (d.m_tok) {
        const float* mt = d.m_tok + size_t(t) * size_t(ld_tok);
        for (size_t c = 0; c < c_count; ++c) out[c] = math::delta_mix(x[c], s[c], m[c] + mt[c]);
      } else {
        for (size_t c = 0; c < c_count; ++c) out[c] = math::delta_mix(x[c], s[c], m[c]);
      }
    }
  }
}

// The recurrences run in parallel over (sequence, channel or head) pairs; within a pair the tokens
// follow each other, so the arithmetic is the same whatever the batch.
void CpuBackend::wkv4(std::span<const SeqSlice> seqs, int C, const Vector& w, const Vector& u, const float* k, const float* v, float* y) {
  const int B = int(seqs.size());
  size_t work = 0;
  for (auto& q : seqs) work += size_t(q.n) * size_t(C) * 16;
#pragma omp parallel for collapse(2) num_threads(threads_for(work)) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C; ++c) {
      const SeqSlice& q = seqs[size_t(b)];
      float *aa = q.state, *bb = q.state + C, *pp = q.state + 2 * C;
      float a = aa[c], bv = bb[c], p = pp[c];
      for (int t = 0; t < q.n; ++t) {
        size_t i = size_t(q.offset + t) * C + c;
        y[i] = wkv4_step(w[c], u[c], k[i], v[i], a, bv, p);
      }
      aa[c] = a;
      bb[c] = bv;
      pp[c] = p;
    }
}

namespace {
// Runs step(i, o, S) for every token of every (sequence, head) pair, where i is the token's first element
// of that head, o the head's first channel and S the head's state. Pairs run in parallel, a pair's tokens
// in order: the v5/v6 and v7 recurrences differ only in their step.
template <typename Step>
void for_each_head_token(std::span<const SeqSlice> seqs, int H, int N, Step step) {
  const size_t C = size_t(H) * N;
  const int B = int(seqs.size());
  size_t work = 0;
  for (auto& q : seqs) work += size_t(q.n) * C * N * 4;
#pragma omp parallel for collapse(2) num_threads(threads_for(work)) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const SeqSlice& q = seqs[size_t(b)];
      size_t o = size_t(h) * N;
      for (int t = 0; t < q.n; ++t) step(size_t(q.offset + t) * C + o, o, q.state + o * N);
    }
}
}  // namespace

void CpuBackend::wkv5(std::span<const SeqSlice> seqs, int H, int N, const float* r, const float* k, const float* v, const float* w_tok,
                      const Vector* w_fixed, const Vector& u, float* y) {
  for_each_head_token(seqs, H, N, [&](size_t i, size_t o, float* S) {
    const float* w = w_tok ? w_tok + i : w_fixed->data() + o;
    wkv5_head_step(N, r + i, k + i, v + i, w, u.data() + o, S, y + i);
  });
}

// Per head of each token, everything in turn (the state's recurrence is the only order between them).
void CpuBackend::v7_attention(std::span<const SeqSlice> seqs, int H, int N, const V7Attention& in, float* y, int T) {
  for_each_head_token(seqs, H, N, [&](size_t i, size_t o, float* S) {
    v7_keys_head(N, in.k + i, in.kk + i, in.a + i, in.k_k->data() + o, in.k_a->data() + o);
    for (int n = 0; n < N; ++n) {
      if (in.gate) in.v[i + n] = v7_value_residual(in.v[i + n], in.v_first[i + n], in.gate[i + n], (*in.v0)[o + size_t(n)]);
      else in.v_first[i + n] = in.v[i + n];
    }
    cpu::wkv7_head(N, in.r + i, in.w + i, in.k + i, in.v + i, in.kk + i, in.a + i, S, y + i);
    v7_output_head(N, y + i, in.r + i, in.k + i, in.v + i, in.g + i, in.ln_w->data() + o, in.ln_b->data() + o, in.r_k->data() + o);
  });
}

}  // namespace skein
