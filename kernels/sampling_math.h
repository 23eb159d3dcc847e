// Per-element arithmetic of the official sampling steps, shared by the CPU sampler
// (coordinator/sampler.cpp) and the GPU kernel (kernels/cuda/sampling.cu): the two differ only in how
// they find thresholds (a sort there, radix selection here) and in the order of their double sums.
#pragma once
#include <math.h>
#include <stdint.h>

#include "kernels/numeric.h"

namespace skein::math {

// Softmax numerator (float, as torch's float32 softmax on the CPU computes it) and normalisation by a
// double total.
SKEIN_HD float softmax_numerator(float logit, float max_logit) { return expf(logit - max_logit); }
SKEIN_HD float normalized(float p, double total) { return float(double(p) / total); }
// probs ** (1 / temperature)
SKEIN_HD float tempered(float p, float temperature) { return powf(p, 1.0f / temperature); }
// A penalised logit: +inf amounts ban the token.
SKEIN_HD float penalized(float logit, float amount) { return isinf(amount) ? -INFINITY : logit - amount; }

}  // namespace skein::math
