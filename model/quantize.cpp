#include "model/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "kernels/numeric.h"

namespace skein {

// Load-time conversions run once per matrix but over every weight (a 7B model has 7e9): they are
// parallel over rows and read rows contiguously. Each element's arithmetic does not depend on the
// order (min, max, one subtraction or division each), so the result is the serial one bit for bit.
std::unique_ptr<float[]> matrix_to_f32(const Matrix& m) {
  const int64_t rows = m.rows, cols = m.cols;
  std::unique_ptr<float[]> out(new float[size_t(rows) * size_t(cols)]);  // every element written below, by the threads that use it
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < rows; ++o) {
    float* dst = out.get() + size_t(o) * size_t(cols);
    const size_t base = size_t(o) * size_t(cols);
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = base + size_t(c);
      uint16_t h;
      switch (m.dtype) {
        case DType::F32: std::memcpy(&dst[c], m.data + 4 * i, 4); break;
        case DType::F16: std::memcpy(&h, m.data + 2 * i, 2); dst[c] = fp16_to_float(h); break;
        case DType::BF16: std::memcpy(&h, m.data + 2 * i, 2); dst[c] = bf16_to_float(h); break;
        case DType::U8: {
          const QuantParams& q = *m.quant;
          dst[c] = ((float(m.data[i]) + 0.5f) * q.ry[size_t(c)]) * q.rx[size_t(o)] + q.my[size_t(c)] + q.mx[size_t(o)];
          break;
        }
      }
    }
  }
  return out;
}

namespace {
float round_to(float v, DType t) {
  if (t == DType::BF16) return bf16_to_float(float_to_bf16(v));
  if (t == DType::F16) return fp16_to_float(float_to_fp16(v));
  return v;
}
}  // namespace

Matrix convert_matrix(const Matrix& m, DType dtype) {
  if (m.dtype == dtype) return m;
  const std::unique_ptr<float[]> f = matrix_to_f32(m);
  const int64_t n = m.rows * m.cols;
  Matrix out;
  out.dtype = dtype;
  out.rows = m.rows;
  out.cols = m.cols;
  auto bytes = uninitialized_bytes(size_t(n) * dtype_size(dtype));
  uint8_t* d = bytes.get();
  out.owned = bytes;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    if (dtype == DType::F32) std::memcpy(d + 4 * i, &f[size_t(i)], 4);
    else { uint16_t h = dtype == DType::BF16 ? float_to_bf16(f[size_t(i)]) : float_to_fp16(f[size_t(i)]); std::memcpy(d + 2 * i, &h, 2); }
  }
  out.data = d;
  return out;
}

Matrix quantize_i8(const Matrix& m, DType param_dtype) {
  // The official code works on M = W^T, shape [in][out]: "rows" are inputs (my, ry), "columns" outputs
  // (mx, rx). Here W is [out][in] (w[o*in + i] = M[i][o]), so an output's values are contiguous.
  const int64_t out = m.rows, in = m.cols;
  const std::unique_ptr<float[]> w = matrix_to_f32(m);
  float* W = w.get();
  const int64_t n = out * in;
  // NaN or infinity has no place on the uint8 grid (and converting it is undefined).
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (int64_t k = 0; k < n; ++k) finite = finite && std::isfinite(W[k]);
  for (int64_t k = 0; !finite && k < n; ++k)
    if (!std::isfinite(W[k])) fail("weight [", int64_t(k) / in, ", ", int64_t(k) % in, "] is ", W[k], ": only finite weights can be quantized to i8");
  auto q = std::make_shared<QuantParams>();
  q->mx.assign(size_t(out), 0); q->rx.assign(size_t(out), 0);
  q->my.assign(size_t(in), 0); q->ry.assign(size_t(in), 0);
  // Per input i, a reduction over the outputs: each thread takes a block of inputs and walks the rows.
  auto per_input = [&](std::vector<float>& res, float init, bool is_min) {
#pragma omp parallel
    {
#pragma omp for schedule(static)
      for (int64_t i0 = 0; i0 < in; i0 += 256) {
        const int64_t i1 = std::min(in, i0 + 256);
        for (int64_t i = i0; i < i1; ++i) res[size_t(i)] = init;
        for (int64_t o = 0; o < out; ++o) {
          const float* row = W + size_t(o) * size_t(in);
          for (int64_t i = i0; i < i1; ++i) res[size_t(i)] = is_min ? std::min(res[size_t(i)], row[i]) : std::max(res[size_t(i)], row[i]);
        }
      }
    }
  };
  auto rows_apply = [&](auto f) {  // f(o, row) for every output row, in parallel
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; ++o) f(o, W + size_t(o) * size_t(in));
  };
  auto row_min = [&] {  // my[i] = min over o, then subtract
    per_input(q->my, INFINITY, true);
    rows_apply([&](int64_t, float* row) { for (int64_t i = 0; i < in; ++i) row[i] = row[i] - q->my[size_t(i)]; });
  };
  auto col_min = [&] {
    rows_apply([&](int64_t o, float* row) {
      float v = INFINITY;
      for (int64_t i = 0; i < in; ++i) v = std::min(v, row[i]);
      q->mx[size_t(o)] = v;
      for (int64_t i = 0; i < in; ++i) row[i] = row[i] - v;
    });
  };
  auto nonzero = [](float z) { return z == 0.0f ? 1.0f : z; };
  if (in > out) { row_min(); col_min(); }
  else { col_min(); row_min(); }
  rows_apply([&](int64_t o, float* row) {
    float v = -INFINITY;
    for (int64_t i = 0; i < in; ++i) v = std::max(v, row[i]);
    q->rx[size_t(o)] = v;
    float d = nonzero(v);
    for (int64_t i = 0; i < in; ++i) row[i] = row[i] / d;
  });
  per_input(q->ry, -INFINITY, false);
  rows_apply([&](int64_t, float* row) { for (int64_t i = 0; i < in; ++i) row[i] = row[i] / nonzero(q->ry[size_t(i)]); });
  Matrix r;
  r.dtype = DType::U8;
  r.rows = out;
  r.cols = in;
  auto codes = uninitialized_bytes(size_t(n));
  uint8_t* dst = codes.get();
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < n; ++k) dst[k] = uint8_t(std::clamp(std::floor(W[k] * 256.0f), 0.0f, 255.0f));
  r.owned = codes;
  r.data = dst;
  for (auto& v : q->mx) v = round_to(v, param_dtype);
  for (auto& v : q->my) v = round_to(v, param_dtype);
  for (auto& v : q->rx) v = round_to(v / 16.0f, param_dtype);
  for (auto& v : q->ry) v = round_to(v / 16.0f, param_dtype);
  r.quant = q;
  return r;
}

}  // namespace skein
