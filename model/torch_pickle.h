// A restricted unpickler for torch state dicts. It understands exactly the objects a state dict is made
// of (tensors rebuilt by torch._utils._rebuild_tensor_v2 over typed storages, OrderedDict and the plain
// containers) and refuses every other global by name. Nothing in the file is ever executed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace skein {

struct PickledTensor {
  std::string name;          // state-dict key
  std::string storage_key;   // zip member data/<storage_key>
  DType dtype = DType::F32;
  uint64_t storage_numel = 0;
  uint64_t storage_offset = 0;  // in elements
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;
};

// Parses data.pkl of a torch zip checkpoint. Non-tensor values in the top-level dict are skipped.
// Throws skein::Error("<label>: ...") on malformed or disallowed content.
std::vector<PickledTensor> read_state_dict_pickle(const uint8_t* data, size_t size, const std::string& label);

}  // namespace skein
