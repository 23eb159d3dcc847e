// libFuzzer entry point for the strategy parser. Build with clang:
//   cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DSKEIN_FUZZ=ON && ninja -C build-fuzz strategy_fuzzer
//   ./build-fuzz/tests/strategy_fuzzer -max_total_time=60
// Any input must parse or raise skein::Error; anything else (crash, other exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "coordinator/strategy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto segs = skein::parse_strategy(std::string(reinterpret_cast<const char*>(data), size));
    for (auto& s : segs) (void)skein::format_segment(s);
  } catch (const skein::Error&) {
  }
  return 0;
}
