// What a matrix product does with each result, the same on every backend: store it, store an
// activation of it (optionally of it plus a bias per output row), or add it to the output (a residual),
// so the product's own kernel does what would otherwise be a second pass over the results.
#pragma once
#include <stdint.h>

#include "kernels/rwkv_math.h"

namespace skein {

struct ProductOutput {
  enum Kind { Store, Activate, Add } kind = Store;
  UnaryOp op = UnaryOp::Sigmoid;  // for Activate
  // For Activate: one value per output row added before the activation, or null. The model passes a
  // weight vector's host address; a device backend hands its kernels the device copy.
  const float* bias = nullptr;
  static ProductOutput activated(UnaryOp op, const float* bias = nullptr) { return {Activate, op, bias}; }
  static ProductOutput added() { return {Add, UnaryOp::Sigmoid, nullptr}; }
  // The value to write for output row o where `old` is.
  SKEIN_HD float apply(float dot, float old, int64_t o) const {
    if (kind == Activate) return math::activate(op, bias ? dot + bias[o] : dot);
    return kind == Add ? old + dot : dot;
  }
};

}  // namespace skein
