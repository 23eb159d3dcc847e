// Host entry points of the CUDA kernels. Pointers are device memory; launches, copies and allocations go
// to the current device's one stream (a set of GEMMs forks from it and joins back) and return at once (a
// download waits for them). The per-element math is the same
// __host__ __device__ code the CPU backend runs (kernels/rwkv_math.h), so the CPU tests of that file
// test the GPU arithmetic too. Every CUDA or cuBLAS failure becomes a skein::Error.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/product_output.h"

namespace skein::cuda {

// Number of usable GPUs; 0 when there is no driver or no device (cudaGetDeviceCount fails).
int device_count();
void set_device(int device);
struct DeviceInfo {
  std::string name;
  size_t total_bytes = 0, free_bytes = 0;
  double peak_bandwidth_gbs = 0;  // memory clock x bus width x 2 (DDR)
  int sm = 0;                     // compute capability, e.g. 90
};
DeviceInfo device_info(int device);
void synchronize();  // waits for the current device's stream
// The current device's stream as a cudaStream_t (for NCCL and CUDA graphs outside the .cu files).
void* stream_handle();

float* alloc_floats(size_t n);
void* alloc_bytes(size_t n);
void free_floats(float* p);
void free_bytes(void* p);
void upload(float* dst, const float* src, size_t n);
void upload_bytes(void* dst, const void* src, size_t n);
void download(float* dst, const float* src, size_t n);
void download_bytes(void* dst, const void* src, size_t n);
void copy(float* dst, const float* src, size_t n);
// Small host data (token ids, batch tables) through a pinned ring: returns at once, `src` may be reused.
void stage(void* dst, const void* src, size_t n);

// ---- CUDA graphs (kernels/cuda/device.cu): a step's launches recorded once from the stream and replayed.
struct Graph;
void begin_capture();  // thread-local mode: a synchronising call during capture fails instead of hanging
// Ends the capture; `keep` false (an error happened) discards it. Returns the instantiated graph or null.
Graph* end_capture(bool keep);
void launch(Graph* g);
void destroy(Graph* g);
// Page-locked host memory, and an upload from it that a capture records as a graph node (the node
// reads the same host address at every replay).
void* alloc_pinned(size_t n);
void free_pinned(void* p);
void upload_pinned(void* dst, const void* pinned_src, size_t n);
struct Event;
Event* new_event(bool timed = false);  // timed: usable with elapsed_seconds (profiling)
double elapsed_seconds(Event* from, Event* to);  // waits for `to`
void record(Event* e);  // on the stream
void wait(Event* e);    // host waits for it
void destroy(Event* e);
// A second stream per device for host -> device weight copies that overlap compute (streamed layers).
void upload_on_copy_stream(void* dst, const void* pinned_src, size_t n);
// Best of `repeats` copies of `bytes` from pinned host memory to `device` on its copy stream, GB/s (1e9).
double measure_upload_gb_s(int device, size_t bytes = size_t(256) << 20, int repeats = 4);
void record_on_copy_stream(Event* e);
void copy_stream_waits(Event* e);  // later copies wait for e (recorded on the compute stream)
void stream_waits(Event* e);       // later compute waits for e (recorded on the copy stream)
// Bumped whenever a buffer a recorded graph may point at (the products' scratch) is reallocated.
uint64_t workspace_epoch();
void bump_workspace_epoch();

enum class WeightType { F32, F16, BF16, U8 };

// ---- elementwise and normalisation (kernels/cuda/elementwise.cu)
// y[t] = layer_norm(x[t]) over T rows of C, eps 1e-5.
void layer_norm(const float* x, const float* w, const float* b, float* y, int T, int C);
// Per-head normalisation in place: T*H groups of N, eps 64e-5.
void group_norm(float* x, const float* w, const float* b, int T, int H, int N);
// x[t] = layer_norm(emb[tokens[t]]) with emb [vocab x C] of `type` (F32, F16 or BF16); tokens on the device.
void embed(const void* emb, WeightType type, const float* ln_w, const float* ln_b, const int32_t* tokens, int T, int C, float* x);
// out[i] = x[rows[i]] for n rows of C; rows on the device.
void gather_rows(const float* x, const int32_t* rows, int n, int C, float* out);
void add(float* x, const float* y, size_t n);
void mul(float* x, const float* y, size_t n);
void lerp_mix(const float* xx, const float* sx, const float* m, float* out, int T, int C);
// Up to kMax mixes of the same rows, one launch: out = xx + (sx - xx) * (m + m_tok[t]) (m_tok may be null).
struct Mixes {
  static constexpr int kMax = 6;
  struct Mix {
    const float* m;
    const float* m_tok;
    float* out;
  } mix[kMax] = {};
  int count = 0;
};
void delta_mix(const float* xx, const float* sx, const Mixes& mixes, int64_t ld_tok, int T, int C);
// Per head of each token (a warp per head): kk = normalize(k*k_k); k = k*(1+(a-1)*k_a).
void v7_keys(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int T, int H, int N);
// v += (v_first - v) * sigmoid(gate + v0) over T rows of C.
void v7_value_residual(float* v, const float* v_first, const float* gate, const float* v0, int T, int C);
// Per head of each token, in place: y = (ln_x(y) + sum(r*k*r_k) * v) * g (a warp per head).
void v7_output(float* y, const float* r, const float* k, const float* v, const float* g, const float* ln_w, const float* ln_b, const float* r_k,
               int T, int H, int N);

// ---- recurrences (kernels/cuda/wkv.cu), every sequence of a batch in one launch. `seqs` is a device
// table of B slices (rows offset..offset+n of the activations, the op's part of that sequence's state);
// its layout is worker/backend.h's SeqSlice.
struct Slice {
  int offset;
  int n;
  float* state;
};
// Per sequence: sx[first] = prev (the state), sx[t] = xx[t-1], prev = xx[last]. max_tokens: the
// longest sequence's token count.
void token_shift(const float* xx, float* sx, const Slice* seqs, int B, int C, int max_tokens);
// delta_mix(xx, sx) with xx = layer_norm(x) and sx its token shift (the state moved as token_shift
// does) in one launch: a row's norm, its predecessor's (or the state) and every mix at once (a short
// batch's rows split in column chunks over several blocks).
// seqs: B slices in row order covering T rows; the mixes' m_tok must be null.
void norm_shift_mix(const float* x, const float* ln_w, const float* ln_b, const Slice* seqs, int B, const Mixes& mixes, int T, int C);
// v4: state = aa, bb, pp [3 x C].
void wkv4(const Slice* seqs, int B, int C, const float* w, const float* u, const float* k, const float* v, float* y);
// v5/v6: state = S [H x N x N]; w_tok [rows x C] (v6) or null to use w_fixed [C] (v5).
void wkv5(const Slice* seqs, int B, int H, int N, const float* r, const float* k, const float* v, const float* w_tok, const float* w_fixed,
          const float* u, float* y);
// v7: state = S [H x N x N].
void wkv7(const Slice* seqs, int B, int H, int N, const float* r, const float* w, const float* k, const float* v, const float* kk,
          const float* a, float* y);
// v7's attention after its products (worker/backend.h's v7_attention) for B sequences of T rows in
// all: with one_token_each (a decode step) and N = 64, one launch (kernels/cuda/v7_attention.cu);
// otherwise v7_keys, v7_value_residual (or v_first = v), wkv7 and v7_output.
struct V7AttentionArgs {
  const float *r, *w, *a, *g;
  float *k, *v, *kk;  // scratch: unspecified afterwards
  float* v_first;
  const float* gate;  // null at the first layer
  const float *k_k, *k_a, *v0, *ln_w, *ln_b, *r_k;
};
void v7_attention(const Slice* seqs, int B, int H, int N, const V7AttentionArgs& in, float* y, int T, bool one_token_each);

// ---- sampling (kernels/cuda/sampling.cu): one token per row of logits [n x V] (penalties applied in
// place), the official PIPELINE steps; probs is scratch [n x V]; rows, penalties and tokens on the device.
struct SampleRow {
  float temperature;
  float top_p;
  int top_k;
  int penalty_begin, penalty_end;  // this row's entries of the penalty table
  double u;
};
struct Penalty {
  int32_t token;
  float amount;  // +inf bans
};
void sample(float* logits, int n, int V, const SampleRow* rows, const Penalty* penalties, float* probs, int32_t* tokens);

// ---- products (kernels/cuda/linear.cu): y[t*ldy + o] = sum_i W[o][i] x[t*ldx + i], W [rows x cols].
// F32 through cuBLAS sgemm. F16, BF16 and U8 (the official scheme, per-row rx/mx and per-column ry/my)
// by a tensor-core kernel (tf32, x split in two parts: fp32 accuracy) for up to 8 rows of x; beyond
// that F16/BF16 through cublasGemmEx on tensor cores (x rounded to the weight type, fp32 accumulation)
// and U8 dequantized to fp16 tiles and GemmEx. (Keeping the LoRA factors on the tensor-core kernel in
// 8-row groups of x was measured on an H200: their four second factors took 19 ms of a 2048-token
// prompt, against 4.8 ms through cuBLAS.)
// `out` says what becomes of each result (stored, activated, added to y); out.bias is device memory.
void linear(const void* W, WeightType type, const float* rx, const float* mx, const float* ry, const float* my, int64_t rows,
            int64_t cols, const float* x, int64_t ldx, float* y, int64_t ldy, int T, ProductOutput out = {});
// Several independent products over T rows each (no product's y overlaps another's x or y). Products
// of the same weight format on the tensor-core kernel share one launch (a layer's r, k, v and its
// LoRA inputs: one launch, not seven); beyond 8 rows their fp16/bf16 GEMMs run side by side on four
// streams forked from the device stream and joined back to it.
struct LinearJob {
  const void* W;
  WeightType type;
  const float *rx, *mx, *ry, *my;  // U8 only
  int64_t rows, cols;
  const float* x;
  int64_t ldx;
  float* y;
  int64_t ldy;
  ProductOutput out;
};
void linears(const LinearJob* jobs, int count, int T);
// Opens cuBLAS and makes the current device's handles, lanes and workspaces now, so that a stage pays
// for them (0.6 s and 4 x 32 MiB) when it loads, not at its first request.
void prepare_products();
// The fp32 product alone (kept for the kernel tests).
void linear_f32(const float* W, int rows, int cols, const float* x, float* y, int T);

}  // namespace skein::cuda
