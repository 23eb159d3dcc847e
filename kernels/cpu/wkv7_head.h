// v7 WKV on the CPU for one head and one token, each state row in 16-float SIMD chunks along its keys.
// math::wkv7_row defines the arithmetic and its order (sixteen partial sums, j mod 16); a plain loop over
// it leaves the vector units idle: v7's attention was a quarter of a 0.1B fp32 prefill on 2 cores and
// is an eighth with this (one core, 12 heads of 64 over 512 tokens: 55 ms a layer looping, 6.4 ms here).
#pragma once

namespace skein::cpu {

// Arguments as math::wkv7_head_step: the head's N values of this token, S its [N x N] state.
void wkv7_head(int N, const float* r, const float* w, const float* k, const float* v, const float* kk, const float* a, float* S, float* y);

}  // namespace skein::cpu
