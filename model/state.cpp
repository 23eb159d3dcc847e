#include "model/state.h"

#include "common/error.h"

namespace skein {

State::State(Backend& backend, const ModelDims& dims, int first_layer, int last_layer)
    : dims_(dims), first_(first_layer), last_(last_layer),
      buf_(backend, dims.state_floats_per_layer() * size_t(last_layer - first_layer)) {}

std::vector<float> State::to_host() const {
  std::vector<float> v(size());
  if (!v.empty()) buf_.backend()->to_host(v.data(), buf_.get(), v.size());
  return v;
}

void State::from_host(const std::vector<float>& v) {
  if (v.size() != size()) fail("state has ", v.size(), " values, expected ", size());
  if (!v.empty()) buf_.backend()->to_device(buf_.get(), v.data(), v.size());
}

State State::clone() const {
  State s(*buf_.backend(), dims_, first_, last_);
  if (size()) buf_.backend()->copy(s.buf_.get(), buf_.get(), size());
  return s;
}

}  // namespace skein
