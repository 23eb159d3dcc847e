#include "model/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "kernels/numeric.h"

namespace skein {

std::vector<float> matrix_to_f32(const Matrix& m) {
  const size_t n = size_t(m.rows) * size_t(m.cols);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    switch (m.dtype) {
      case DType::F32: std::memcpy(&out[i], m.data + 4 * i, 4); break;
      case DType::F16: std::memcpy(&h, m.data + 2 * i, 2); out[i] = fp16_to_float(h); break;
      case DType::BF16: std::memcpy(&h, m.data + 2 * i, 2); out[i] = bf16_to_float(h); break;
      case DType::U8: {
        const QuantParams& q = *m.quant;
        size_t o = i / size_t(m.cols), c = i % size_t(m.cols);
        out[i] = ((float(m.data[i]) + 0.5f) * q.ry[c]) * q.rx[o] + q.my[c] + q.mx[o];
        break;
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
  std::vector<float> f = matrix_to_f32(m);
  Matrix out;
  out.dtype = dtype;
  out.rows = m.rows;
  out.cols = m.cols;
  out.owned = std::make_shared<std::vector<uint8_t>>(f.size() * dtype_size(dtype));
  uint8_t* d = out.owned->data();
  for (size_t i = 0; i < f.size(); ++i) {
    if (dtype == DType::F32) std::memcpy(d + 4 * i, &f[i], 4);
    else { uint16_t h = dtype == DType::BF16 ? float_to_bf16(f[i]) : float_to_fp16(f[i]); std::memcpy(d + 2 * i, &h, 2); }
  }
  out.data = d;
  return out;
}

Matrix quantize_i8(const Matrix& m, DType param_dtype) {
  // The official code works on M = W^T, shape [in][out]: "rows" are inputs (my, ry), "columns" outputs
  // (mx, rx). Here W is [out][in], so M[i][o] = w[o*in + i].
  const int64_t out = m.rows, in = m.cols;
  std::vector<float> w = matrix_to_f32(m);
  auto M = [&](int64_t i, int64_t o) -> float& { return w[size_t(o * in + i)]; };
  auto q = std::make_shared<QuantParams>();
  q->mx.assign(size_t(out), 0); q->rx.assign(size_t(out), 0);
  q->my.assign(size_t(in), 0); q->ry.assign(size_t(in), 0);
  auto row_min = [&] {  // my[i] = min over o, then subtract
    for (int64_t i = 0; i < in; ++i) {
      float v = INFINITY;
      for (int64_t o = 0; o < out; ++o) v = std::min(v, M(i, o));
      q->my[size_t(i)] = v;
      for (int64_t o = 0; o < out; ++o) M(i, o) = M(i, o) - v;
    }
  };
  auto col_min = [&] {
    for (int64_t o = 0; o < out; ++o) {
      float v = INFINITY;
      for (int64_t i = 0; i < in; ++i) v = std::min(v, M(i, o));
      q->mx[size_t(o)] = v;
      for (int64_t i = 0; i < in; ++i) M(i, o) = M(i, o) - v;
    }
  };
  auto nonzero = [](float z) { return z == 0.0f ? 1.0f : z; };
  if (in > out) { row_min(); col_min(); }
  else { col_min(); row_min(); }
  for (int64_t o = 0; o < out; ++o) {
    float v = -INFINITY;
    for (int64_t i = 0; i < in; ++i) v = std::max(v, M(i, o));
    q->rx[size_t(o)] = v;
    float d = nonzero(v);
    for (int64_t i = 0; i < in; ++i) M(i, o) = M(i, o) / d;
  }
  for (int64_t i = 0; i < in; ++i) {
    float v = -INFINITY;
    for (int64_t o = 0; o < out; ++o) v = std::max(v, M(i, o));
    q->ry[size_t(i)] = v;
    float d = nonzero(v);
    for (int64_t o = 0; o < out; ++o) M(i, o) = M(i, o) / d;
  }
  Matrix r;
  r.dtype = DType::U8;
  r.rows = out;
  r.cols = in;
  r.owned = std::make_shared<std::vector<uint8_t>>(w.size());
  for (size_t k = 0; k < w.size(); ++k) r.owned->at(k) = uint8_t(std::clamp(std::floor(w[k] * 256.0f), 0.0f, 255.0f));
  r.data = r.owned->data();
  for (auto& v : q->mx) v = round_to(v, param_dtype);
  for (auto& v : q->my) v = round_to(v, param_dtype);
  for (auto& v : q->rx) v = round_to(v / 16.0f, param_dtype);
  for (auto& v : q->ry) v = round_to(v / 16.0f, param_dtype);
  r.quant = q;
  return r;
}

}  // namespace skein
