// Fuzz target: check without repair. Properties: no crash, UB or hang, and
// a check that does not repair writes no byte of the image.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qcrash::fuzz::CheckWritesNothing({data, size});
  return 0;
}
