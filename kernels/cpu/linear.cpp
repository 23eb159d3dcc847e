#include "kernels/cpu/linear.h"
#include "kernels/rwkv_math.h"

#include <dnnl.h>
// GCC 12's AVX-512 intrinsics pass an undefined vector through as the unused source, which
// -Wmaybe-uninitialized reports at every inlined use (GCC bug 105593): 51 false warnings a build; built
// without -march=native (SKEIN_NATIVE off), _mm512_reduce_add_ps draws -Wuninitialized the same way.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/numeric.h"

namespace skein::cpu {
namespace {

int g_threads = 0;
bool g_batch_invariant = false;
// Software prefetch this far ahead of each weight stream. Measured on a 2-core Xeon: 8 KiB ahead lifts
// bf16 decode of the 0.1B shape from 57 to 90 tokens/s (hardware prefetchers alone stop at page ends).
constexpr int64_t kPrefetchBytes = 8192;
// Memory streams one matrix-vector product reads per thread (matvec_avx512), and how far ahead of each
// it prefetches. uint8 rows stay one at a time: widening the codes keeps that loop busy.
constexpr int kMatvecStreams = 4;
constexpr int64_t kStreamPrefetchBytes = 1024;
// Below this many weight bytes a fork/join costs more than the second core saves.
constexpr size_t kParallelMinBytes = 1 << 16;
// Rows of x one pass over the weights serves, and the weight bytes a pass covers when there are more.
constexpr int kXRowsPerGroup = 4;
constexpr int64_t kL2BlockBytes = 128 << 10;

int default_threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return 1;
}

float load_scalar(const Matrix& W, const uint8_t* row, int64_t i) {
  switch (W.dtype) {
    case DType::F32: { float f; std::memcpy(&f, row + 4 * i, 4); return f; }
    case DType::F16: { uint16_t h; std::memcpy(&h, row + 2 * i, 2); return fp16_to_float(h); }
    case DType::BF16: { uint16_t h; std::memcpy(&h, row + 2 * i, 2); return bf16_to_float(h); }
    case DType::U8: return float(row[i]);
  }
  return 0;
}

// ---- AVX-512: 32 weights per step, fixed accumulation order per output element.
template <DType DT>
__attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma"))) inline void load32_avx512(const uint8_t* p, __m512& lo, __m512& hi) {
  if constexpr (DT == DType::F32) {
    lo = _mm512_loadu_ps(reinterpret_cast<const float*>(p));
    hi = _mm512_loadu_ps(reinterpret_cast<const float*>(p) + 16);
  } else if constexpr (DT == DType::BF16) {
    // Each half widened in order and shifted up. (Shifting and masking one 64-byte load, with x split
    // into even and odd halves to match, read rows at half the speed in four runs: 20 against 41 GB/s.)
    lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
    hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p) + 1)), 16));
  } else {
    lo = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    hi = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p) + 1));
  }
}

template <DType DT, int NT>
__attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma"))) void rows_avx512(const Matrix& W, const float* x, int64_t ldx,
                                                                                float* y, int64_t ldy, int64_t r0, int64_t r1) {
  const int64_t K = W.cols, es = int64_t(dtype_size(DT));
  const int64_t K32 = K / 32 * 32;
  for (int64_t o = r0; o < r1; ++o) {
    const uint8_t* row = W.data + o * K * es;
    __m512 acc[NT][2];
    for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    for (int64_t i = 0; i < K32; i += 32) {
      _mm_prefetch(reinterpret_cast<const char*>(row + i * es + kPrefetchBytes), _MM_HINT_T0);
      __m512 lo, hi;
      load32_avx512<DT>(row + i * es, lo, hi);
      for (int t = 0; t < NT; ++t) {
        acc[t][0] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(x + t * ldx + i), acc[t][0]);
        acc[t][1] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + t * ldx + i + 16), acc[t][1]);
      }
    }
    for (int t = 0; t < NT; ++t) {
      float s = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]));
      for (int64_t i = K32; i < K; ++i) s += load_scalar(W, row, i) * x[t * ldx + i];
      y[t * ldy + o] = s;
    }
  }
}

// Matrix-vector (one input row): each thread splits its rows into kMatvecStreams equal runs and takes a
// row from each in turn, so it reads that many long sequential streams, every cache line prefetched
// kStreamPrefetchBytes ahead. On a 2-vCPU EPYC this reads fp16 at 55-77 GB/s, bf16 at 64-74 and fp32
// at 55-71, where 8 neighbouring rows (short streams, one prefetch per 32 weights, 8 KiB ahead) read
// 35-50, 36-41 and 41-55. Each row's sum is the same whichever run it falls in.
template <DType DT>
__attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma"))) void matvec_avx512(const Matrix& W, const float* x, float* y,
                                                                                  int64_t r0, int64_t r1) {
  constexpr int N = kMatvecStreams;
  constexpr int kLines = int(32 * dtype_size(DT) / 64);  // cache lines of weights per step of 32
  const int64_t K = W.cols, es = int64_t(dtype_size(DT));
  const int64_t K32 = K / 32 * 32;
  const int64_t groups = (r1 - r0) / N;
  auto row_of = [&](int64_t g, int r) { return r0 + r * groups + g; };
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* row[N];
    __m512 acc[N][2];
    for (int r = 0; r < N; ++r) {
      row[r] = W.data + row_of(g, r) * K * es;
      acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    }
    for (int64_t i = 0; i < K32; i += 32) {
      const __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
      for (int r = 0; r < N; ++r) {
        for (int l = 0; l < kLines; ++l)
          _mm_prefetch(reinterpret_cast<const char*>(row[r] + i * es + kStreamPrefetchBytes + 64 * l), _MM_HINT_T0);
        __m512 lo, hi;
        load32_avx512<DT>(row[r] + i * es, lo, hi);
        acc[r][0] = _mm512_fmadd_ps(lo, x0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(hi, x1, acc[r][1]);
      }
    }
    for (int r = 0; r < N; ++r) {
      float s = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
      for (int64_t i = K32; i < K; ++i) s += load_scalar(W, row[r], i) * x[i];
      y[row_of(g, r)] = s;
    }
  }
  const int64_t rest = r0 + groups * N;
  if (rest < r1) rows_avx512<DT, 1>(W, x, 0, y, 0, rest, r1);
}

// ---- AVX2: 16 weights per step.
template <DType DT>
__attribute__((target("avx2,f16c,fma"))) inline void load16_avx2(const uint8_t* p, __m256& lo, __m256& hi) {
  if constexpr (DT == DType::F32) {
    lo = _mm256_loadu_ps(reinterpret_cast<const float*>(p));
    hi = _mm256_loadu_ps(reinterpret_cast<const float*>(p) + 8);
  } else if constexpr (DT == DType::BF16) {
    lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
    hi = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p) + 1)), 16));
  } else {
    lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p) + 1));
  }
}

template <DType DT, int NT>
__attribute__((target("avx2,f16c,fma"))) void rows_avx2(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy,
                                                        int64_t r0, int64_t r1) {
  const int64_t K = W.cols, es = int64_t(dtype_size(DT));
  const int64_t K16 = K / 16 * 16;
  for (int64_t o = r0; o < r1; ++o) {
    const uint8_t* row = W.data + o * K * es;
    __m256 acc[NT][2];
    for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t i = 0; i < K16; i += 16) {
      _mm_prefetch(reinterpret_cast<const char*>(row + i * es + kPrefetchBytes), _MM_HINT_T0);
      __m256 lo, hi;
      load16_avx2<DT>(row + i * es, lo, hi);
      for (int t = 0; t < NT; ++t) {
        acc[t][0] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x + t * ldx + i), acc[t][0]);
        acc[t][1] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + t * ldx + i + 8), acc[t][1]);
      }
    }
    for (int t = 0; t < NT; ++t) {
      __m256 s8 = _mm256_add_ps(acc[t][0], acc[t][1]);
      __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
      s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
      s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
      float s = _mm_cvtss_f32(s4);
      for (int64_t i = K16; i < K; ++i) s += load_scalar(W, row, i) * x[t * ldx + i];
      y[t * ldy + o] = s;
    }
  }
}

void rows_scalar(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T, int64_t r0, int64_t r1) {
  const int64_t K = W.cols, es = int64_t(dtype_size(W.dtype));
  for (int64_t o = r0; o < r1; ++o) {
    const uint8_t* row = W.data + o * K * es;
    for (int t = 0; t < T; ++t) {
      float s = 0;
      for (int64_t i = 0; i < K; ++i) s += load_scalar(W, row, i) * x[t * ldx + i];
      y[t * ldy + o] = s;
    }
  }
}

// ---- uint8 (official i8 scheme). With xr = x*ry the product factors as
//   y[o] = rx[o] * (sum_i q[o][i]*xr[i] + 0.5*sum_i xr[i]) + sum_i x[i]*my[i] + mx[o] * sum_i x[i]
// so the inner loop is one widening convert and one FMA per weight byte.
struct U8Inputs {
  std::vector<float> xr;  // [T][K]
  std::vector<float> sxr, sxmy, sx;
};

void prepare_u8_inputs(const Matrix& W, const float* x, int64_t ldx, int T, U8Inputs& in) {
  const int64_t K = W.cols;
  const QuantParams& q = *W.quant;
  in.xr.resize(size_t(T) * size_t(K));
  in.sxr.assign(size_t(T), 0);
  in.sxmy.assign(size_t(T), 0);
  in.sx.assign(size_t(T), 0);
  for (int t = 0; t < T; ++t) {
    double a = 0, b = 0, c = 0;
    for (int64_t i = 0; i < K; ++i) {
      float xi = x[t * ldx + i], xr = xi * q.ry[size_t(i)];
      in.xr[size_t(t) * size_t(K) + size_t(i)] = xr;
      a += xr;
      b += double(xi) * q.my[size_t(i)];
      c += xi;
    }
    in.sxr[size_t(t)] = float(a);
    in.sxmy[size_t(t)] = float(b);
    in.sx[size_t(t)] = float(c);
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) float dot_u8_avx512(const uint8_t* q, const float* xr, int64_t K) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= K; i += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(q + i + kPrefetchBytes), _MM_HINT_T0);
    __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i))));
    __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i + 16))));
    a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xr + i), a0);
    a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xr + i + 16), a1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  for (; i < K; ++i) s += float(q[i]) * xr[i];
  return s;
}

float dot_u8_scalar(const uint8_t* q, const float* xr, int64_t K) {
  float s = 0;
  for (int64_t i = 0; i < K; ++i) s += float(q[i]) * xr[i];
  return s;
}

void rows_u8(const Matrix& W, const U8Inputs& in, float* y, int64_t ldy, int T, int64_t r0, int64_t r1, bool avx512) {
  const int64_t K = W.cols;
  const QuantParams& q = *W.quant;
  for (int64_t o = r0; o < r1; ++o) {
    const uint8_t* row = W.data + o * K;
    for (int t = 0; t < T; ++t) {
      const float* xr = in.xr.data() + size_t(t) * size_t(K);
      float d = avx512 ? dot_u8_avx512(row, xr, K) : dot_u8_scalar(row, xr, K);
      y[t * ldy + o] = math::u8_output(d, in.sxr[size_t(t)], in.sxmy[size_t(t)], in.sx[size_t(t)], q.rx[size_t(o)], q.mx[size_t(o)]);
    }
  }
}

enum class Simd { Scalar, Avx2, Avx512 };

Simd detect_simd() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) return Simd::Avx512;
  // Every AVX2 CPU has F16C (Ivy Bridge and later), which clang cannot query here.
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Simd::Avx2;
  return Simd::Scalar;
}

const Simd g_best_simd = detect_simd();
Simd g_simd = g_best_simd;

template <DType DT>
void rows_dispatch(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T, int64_t r0, int64_t r1) {
  // Four rows of x at a time, so each weight load feeds four dot products. Beyond four, the weight
  // rows go in blocks that stay in L2 while every group passes over them, so the weights come from
  // memory once per step (2-vCPU EPYC, fp16 at 8 and 32 rows: the head 20-30% faster than 8-row
  // groups over whole matrices, 768x3072 10-20%).
  const int64_t row_bytes = std::max<int64_t>(1, W.cols * int64_t(dtype_size(DT)));
  const int64_t block = T > kXRowsPerGroup ? std::max<int64_t>(8, kL2BlockBytes / row_bytes) : r1 - r0;
  for (int64_t b0 = r0; b0 < r1; b0 += block) {
    const int64_t b1 = std::min(r1, b0 + block);
    for (int t0 = 0; t0 < T; t0 += kXRowsPerGroup) {
      const int nt = std::min(kXRowsPerGroup, T - t0);
      const float* xt = x + t0 * ldx;
      float* yt = y + t0 * ldy;
      if (g_simd == Simd::Avx512) {
        switch (nt) {
          case 1: matvec_avx512<DT>(W, xt, yt, b0, b1); break;
          case 2: rows_avx512<DT, 2>(W, xt, ldx, yt, ldy, b0, b1); break;
          case 3: rows_avx512<DT, 3>(W, xt, ldx, yt, ldy, b0, b1); break;
          default: rows_avx512<DT, 4>(W, xt, ldx, yt, ldy, b0, b1); break;
        }
      } else if (g_simd == Simd::Avx2) {
        switch (nt) {
          case 1: rows_avx2<DT, 1>(W, xt, ldx, yt, ldy, b0, b1); break;
          case 2: rows_avx2<DT, 2>(W, xt, ldx, yt, ldy, b0, b1); break;
          case 3: rows_avx2<DT, 3>(W, xt, ldx, yt, ldy, b0, b1); break;
          default: rows_avx2<DT, 4>(W, xt, ldx, yt, ldy, b0, b1); break;
        }
      } else {
        rows_scalar(W, xt, ldx, yt, ldy, nt, b0, b1);
      }
    }
  }
}

void rows_any(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T, int64_t r0, int64_t r1) {
  switch (W.dtype) {
    case DType::F32: rows_dispatch<DType::F32>(W, x, ldx, y, ldy, T, r0, r1); break;
    case DType::F16: rows_dispatch<DType::F16>(W, x, ldx, y, ldy, T, r0, r1); break;
    case DType::BF16: rows_dispatch<DType::BF16>(W, x, ldx, y, ldy, T, r0, r1); break;
    case DType::U8: break;  // linears_streaming routes uint8 to rows_u8
  }
}

// Widen rows [r0, r1) of W to fp32.
void widen_rows(const Matrix& W, int64_t r0, int64_t r1, float* out) {
  const int64_t K = W.cols;
  const size_t es = dtype_size(W.dtype);
  int64_t n = (r1 - r0) * K;
  const uint8_t* src = W.data + size_t(r0 * K) * es;
  if (W.dtype == DType::U8) {  // the official element formula, as its mm8 dequantizes
    const QuantParams& q = *W.quant;
#pragma omp parallel for num_threads(compute_threads()) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      int64_t o = r0 + i / K, c = i % K;
      out[i] = math::dequant_u8(src[i], q.rx[size_t(o)], q.mx[size_t(o)], q.ry[size_t(c)], q.my[size_t(c)]);
    }
    return;
  }
#pragma omp parallel for num_threads(compute_threads()) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + size_t(i) * 2, 2);
    out[i] = W.dtype == DType::BF16 ? bf16_to_float(h) : fp16_to_float(h);
  }
}

// y[M x N] = x[M x K] · W[N x K]^T, row-major, through oneDNN (JIT kernels chosen from CPUID features).
void sgemm_nt(int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx, const float* W, float* y, int64_t ldy) {
  if (dnnl_sgemm('N', 'T', M, N, K, 1.0f, x, ldx, W, K, 0.0f, y, ldy) != dnnl_success) throw std::runtime_error("oneDNN sgemm failed");
}

}  // namespace

void set_batch_invariant(bool on) { g_batch_invariant = on; }
bool batch_invariant() { return g_batch_invariant; }

void set_compute_threads(int n) {
  g_threads = std::max(1, n);
  omp_set_num_threads(g_threads);  // oneDNN's sgemm runs on the OpenMP pool
}

int compute_threads() {
  if (g_threads == 0) set_compute_threads(default_threads());
  return g_threads;
}

const char* simd_name(Simd s) {
  switch (s) {
    case Simd::Avx512: return "avx512";
    case Simd::Avx2: return "avx2";
    default: return "scalar";
  }
}

const char* simd_level() { return simd_name(g_simd); }

bool set_simd_level(std::string_view level) {
  for (Simd s : {Simd::Scalar, Simd::Avx2, Simd::Avx512})
    if (level == simd_name(s) && s <= g_best_simd) {
      g_simd = s;
      return true;
    }
  return false;
}

void linear_streaming(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T) {
  const StreamingProduct one{&W, x, ldx, y, ldy};
  linears_streaming(&one, 1, T);
}

void linears_streaming(const StreamingProduct* products, int count, int T) {
  if (T <= 0 || count <= 0) return;
  // uint8 products' inputs in the form their kernel reads (xr and sums).
  thread_local std::vector<U8Inputs> u8;
  // Grown, never shrunk: a step's calls vary in count, and a shrink would free the buffers the next call
  // allocates again.
  if (u8.size() < size_t(count)) u8.resize(size_t(count));
  std::vector<StreamingProduct> jobs(products, products + count);
  std::vector<size_t> start(size_t(count) + 1, 0);  // byte offsets of each product's weights in the whole
  for (int i = 0; i < count; ++i) {
    StreamingProduct& j = jobs[size_t(i)];
    if (j.W->dtype == DType::U8) prepare_u8_inputs(*j.W, j.x, j.ldx, T, u8[size_t(i)]);
    start[size_t(i) + 1] = start[size_t(i)] + j.W->nbytes();
  }
  const std::vector<U8Inputs>& inputs = u8;  // the caller's (a thread_local named inside the region would be each thread's own)
  const bool avx512 = g_simd == Simd::Avx512;
  // Share k of n: the rows whose weights begin in bytes [total*k/n, total*(k+1)/n). Each element's
  // reduction order is fixed, so results do not depend on the thread count.
  auto run_share = [&](int k, int n) {
    const size_t b0 = start.back() * size_t(k) / size_t(n), b1 = start.back() * size_t(k + 1) / size_t(n);
    for (int i = 0; i < count; ++i) {
      const StreamingProduct& j = jobs[size_t(i)];
      const size_t row_bytes = j.W->nbytes() / size_t(std::max<int64_t>(1, j.W->rows));
      if (row_bytes == 0 || start[size_t(i) + 1] <= b0 || start[size_t(i)] >= b1) continue;
      auto row_at = [&](size_t b) {  // the first row beginning at or after byte b of the whole
        if (b <= start[size_t(i)]) return int64_t(0);
        return std::min<int64_t>(j.W->rows, int64_t((b - start[size_t(i)] + row_bytes - 1) / row_bytes));
      };
      const int64_t r0 = row_at(b0), r1 = row_at(b1);
      if (r0 >= r1) continue;
      if (j.W->dtype == DType::U8) rows_u8(*j.W, inputs[size_t(i)], j.y, j.ldy, T, r0, r1, avx512);
      else rows_any(*j.W, j.x, j.ldx, j.y, j.ldy, T, r0, r1);
    }
  };
  const int nth = compute_threads();
  if (nth == 1 || start.back() < kParallelMinBytes) return run_share(0, 1);  // a fork/join would cost more than the second core saves
#pragma omp parallel num_threads(nth)
  run_share(omp_get_thread_num(), omp_get_num_threads());
}

bool streams(const Matrix& W, int T) { return T < gemm_min_rows(W) || g_batch_invariant; }

void linear(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T) {
  if (T <= 0 || W.rows == 0) return;
  if (streams(W, T)) {
    linear_streaming(W, x, ldx, y, ldy, T);
    return;
  }
  compute_threads();
  const int64_t K = W.cols;
  if (W.dtype == DType::F32) {
    sgemm_nt(T, W.rows, K, x, ldx, reinterpret_cast<const float*>(W.data), y, ldy);
    return;
  }
  // Half-precision or uint8 weights: widen a block of rows (about 4 MiB) at a time and multiply it.
  const int64_t block = std::max<int64_t>(64, (int64_t(1) << 20) / std::max<int64_t>(K, 1));
  thread_local std::vector<float> wide;
  wide.resize(size_t(std::min(block, W.rows) * K));
  for (int64_t r0 = 0; r0 < W.rows; r0 += block) {
    int64_t r1 = std::min(W.rows, r0 + block);
    widen_rows(W, r0, r1, wide.data());
    sgemm_nt(T, r1 - r0, K, x, ldx, wide.data(), y + r0, ldy);
  }
}

}  // namespace skein::cpu
