// The Backend on one NVIDIA GPU. Activations and states live in device memory; weights are the loader's
// host containers, mirrored to the device on first use and kept there (so a stage uploads its weights
// once). Every op is one or two kernel launches from kernels/cuda (or cuBLAS); nothing synchronises until
// a result is copied to the host.
#pragma once
#include <memory>
#include <unordered_map>

#include "kernels/cuda/cuda_ops.h"
#include "worker/backend.h"

namespace skein {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  std::string name() const override { return "cuda:" + std::to_string(device_); }
  int device() const { return device_; }
  size_t mirrored_bytes() const { return mirrored_bytes_; }

  // CUDA graphs for decode steps; SKEIN_CUDA_GRAPHS=0 turns them off (every step launches its kernels).
  bool can_record() const override { return graphs_; }
  std::unique_ptr<StepRecording> record(const std::function<void()>& step) override;
  bool replay(StepRecording& r, const std::function<void()>& step) override;
  // Steps captured into graphs and steps replayed from them (a capture that fails runs the step directly).
  int recorded_steps() const { return recorded_steps_; }
  int replayed_steps() const { return replayed_steps_; }

  // Profiling marks are events on the stream.
  std::unique_ptr<WorkMark> mark() override;
  double seconds_between(const WorkMark& a, const WorkMark& b) override;

  bool streams_from_host() const override { return true; }
  void hold_in_host(const LayerWeights& lw) override;
  void prefetch(const LayerWeights& lw) override;
  void bring_in(const LayerWeights& lw) override;
  void let_go(const LayerWeights& lw) override;

  float* allocate(size_t n) override;
  void release(float* p) override;
  void to_device(float* dst, const float* host, size_t n) override;
  void to_host(float* host, const float* src, size_t n) override;
  void copy(float* dst, const float* src, size_t n) override;
  void gather_rows(const float* x, const int32_t* rows, int n, int C, float* out) override;
  void sample(float* logits, int n, int V, std::span<const SampleRequest> rows, int32_t* tokens) override;

  void embed(const ModelWeights& w, const int32_t* tokens, int T, float* x) override;
  void layer_norm(const float* x, const Vector& w, const Vector& b, float* y, int T, int C) override;
  void group_norm(float* x, const Vector& w, const Vector& b, int T, int H, int N) override;
  void linear(const Matrix& W, const float* x, int64_t ldx, float* y, int64_t ldy, int T, ProductOutput out = {}) override;
  void linears(std::span<const Product> products, int T) override;
  void add(float* x, const float* y, size_t n) override;
  void mul(float* x, const float* y, size_t n) override;
  void token_shift(const float* xx, float* sx, std::span<const SeqSlice> seqs, int C) override;
  void norm_shift_mix(const float* x, const Vector& ln_w, const Vector& ln_b, std::span<const SeqSlice> seqs, std::span<const DeltaMix> mixes,
                      int T, int C) override;
  void lerp_mix(const float* xx, const float* sx, const Vector& m, float* out, int T, int C) override;
  void delta_mix(const float* xx, const float* sx, std::span<const DeltaMix> mixes, int64_t ld_tok, int T, int C) override;
  void wkv4(std::span<const SeqSlice> seqs, int C, const Vector& w, const Vector& u, const float* k, const float* v, float* y) override;
  void wkv5(std::span<const SeqSlice> seqs, int H, int N, const float* r, const float* k, const float* v, const float* w_tok,
            const Vector* w_fixed, const Vector& u, float* y) override;
  void v7_attention(std::span<const SeqSlice> seqs, int H, int N, const V7Attention& in, float* y, int T) override;

 private:
  struct DeviceMatrix {
    void* data = nullptr;
    float *rx = nullptr, *mx = nullptr, *ry = nullptr, *my = nullptr;
    cuda::WeightType type = cuda::WeightType::F32;
  };
  void select() const;  // makes this backend's GPU current (a process may drive several)
  // Every op asks before launching (it also selects the GPU): false in a recording's sizing and refill
  // passes, which launch nothing. An op hands its host inputs to put() before asking, so those passes
  // see every input of the step.
  bool launching() const;
  // How ops behave: run; count the inputs of a step about to be recorded; record them into the graph;
  // or refill a recording's inputs for a replay.
  enum class Mode { Run, Size, Capture, Fill };
  Mode mode_ = Mode::Run;
  struct Recording;
  Recording* rec_ = nullptr;  // the recording being sized, captured or refilled
  void run_in(Mode mode, Recording* r, const std::function<void()>& step);  // back to Run afterwards
  const void* mirror(const void* host, size_t bytes);
  const float* vec(const Vector& v) { return static_cast<const float*>(mirror(v.data(), v.size() * sizeof(float))); }
  DeviceMatrix mat(const Matrix& W);
  cuda::LinearJob job(const Product& p);  // the product's device pointers

  int device_;
  bool graphs_ = true;
  int recorded_steps_ = 0, replayed_steps_ = 0;
  std::unordered_map<const void*, void*> mirrors_;  // host data -> its device copy
  // Streamed layers: each held layer's tensors packed in one pinned block; two device slots take turns
  // holding the layer that runs and the one being copied in (copy stream), so copies overlap compute.
  struct HeldLayer {
    char* pinned = nullptr;
    size_t bytes = 0;
    std::vector<std::pair<const void*, size_t>> parts;  // host data -> offset in the block
  };
  struct Slot {
    char* dev = nullptr;
    const LayerWeights* layer = nullptr;  // what the slot holds (or is receiving)
    cuda::Event* ready = nullptr;         // copy finished
    cuda::Event* free = nullptr;          // the ops that used it finished
    uint64_t last_use = 0;
  };
  std::unordered_map<const LayerWeights*, HeldLayer> held_;
  Slot slots_[2];
  size_t slot_bytes_ = 0;
  uint64_t uses_ = 0;
  std::unordered_map<const void*, void*> transient_;  // host data of the layer running -> its slot copy
  Slot& slot_for(const LayerWeights& lw);
  std::unordered_map<const void*, DeviceMatrix> matrices_;
  size_t mirrored_bytes_ = 0;
  // A device buffer for small per-step host data (token ids, head rows, batch tables, sampling rows),
  // grown as needed; stream-ordered, so launches already enqueued keep reading the old block.
  struct StepBuffer {
    void* p = nullptr;
    size_t cap = 0;
    void* reserve(size_t bytes);
    ~StepBuffer();
  };
  // Host data for the next launch: into `b` through the staging ring, or, while recording, into the
  // recording's own pinned input area and device arena (whose addresses the graph keeps).
  void* put(StepBuffer& b, const void* host, size_t bytes);
  const cuda::Slice* table(std::span<const SeqSlice> seqs);  // a recurrence's batch, on the device
  StepBuffer tokens_, embedded_rows_, rows_, slices_, sample_rows_, sample_penalties_, sample_probs_, sample_tokens_;
};

}  // namespace skein
