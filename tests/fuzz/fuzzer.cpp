// libFuzzer entry point, built once per input kind (tests/fuzz/CMakeLists.txt sets SKEIN_FUZZ_TARGET).
// A Finding or any exception other than skein::Error's one-line refusal escapes and stops the fuzzer.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tests/fuzz/input_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string shared = std::getenv("SKEIN_SHARED") ? std::getenv("SKEIN_SHARED") : "../shared";
  skein::fuzz::run_check(SKEIN_FUZZ_TARGET, std::string_view(reinterpret_cast<const char*>(data), size), shared);
  return 0;
}
