// Fuzz target: `check -r all` then check. Properties (I7): after a repair
// that ran, check is clean and a second repair writes nothing; the repaired
// guest view then reads without crashing (fuzz_support.h).
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qcrash::fuzz::RepairLeavesCleanImage({data, size});
  return 0;
}
