// One request's recurrent state for a range of layers, fp32 in the backend's memory, in the official
// list order: v4 keeps 5 vectors of C per layer (att_xx, aa, bb, pp, ffn_xx); v5/v6/v7 keep att_xx [C],
// the wkv matrix [H,N,N] and ffn_xx [C]. This is everything a session is: no KV cache exists.
#pragma once
#include <vector>

#include "model/architecture.h"
#include "worker/backend.h"

namespace skein {

class State {
 public:
  State(Backend& backend, const ModelDims& dims, int first_layer, int last_layer);

  const ModelDims& dims() const { return dims_; }
  int first_layer() const { return first_; }
  int last_layer() const { return last_; }
  size_t size() const { return buf_.size(); }                 // floats
  size_t bytes() const { return buf_.size() * sizeof(float); }
  float* data() const { return buf_.get(); }
  float* layer(int i) const { return buf_.get() + size_t(i - first_) * dims_.state_floats_per_layer(); }

  std::vector<float> to_host() const;
  void from_host(const std::vector<float>& v);  // size must match
  State clone() const;

 private:
  ModelDims dims_;
  int first_, last_;
  DeviceBuffer buf_;
};

}  // namespace skein
