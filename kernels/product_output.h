// What a matrix product does with each result, the same on every backend: store it, store an
// activation of it, or add it to the output (a residual), so the product's own kernel does what would
// otherwise be a second pass over the results.
#pragma once
#include "kernels/rwkv_math.h"

namespace skein {

struct ProductOutput {
  enum Kind { Store, Activate, Add } kind = Store;
  UnaryOp op = UnaryOp::Sigmoid;  // for Activate
  static ProductOutput activated(UnaryOp op) { return {Activate, op}; }
  static ProductOutput added() { return {Add, UnaryOp::Sigmoid}; }
  // The value to write where `old` is.
  SKEIN_HD float apply(float dot, float old) const { return kind == Activate ? math::activate(op, dot) : kind == Add ? old + dot : dot; }
};

}  // namespace skein
