#include "model/fingerprint.h"

#include <algorithm>
#include <cstdio>

#include "common/hash.h"

namespace skein {

uint64_t model_fingerprint(const Checkpoint& ck) {
  Fnv64 h;
  for (auto& [name, t] : ck.tensors()) {  // std::map: sorted, so key order in the file does not matter
    h.update(name);
    h.update_value(uint8_t(t.dtype));
    for (auto d : t.shape) h.update_value(d);
    h.update(t.data, std::min<uint64_t>(t.nbytes, 4096));
  }
  return h.digest();
}

std::string fingerprint_hex(uint64_t f) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(f));
  return buf;
}

}  // namespace skein
