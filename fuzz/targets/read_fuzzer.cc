// Fuzz target: open an image read-only and read its guest view (bounded:
// the first MiBs, the last cluster and every cluster its L2 tables map),
// plus the map of small disks. Property: no crash, UB, leak or hang.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qcrash;
  auto device = fuzz::MakeDevice({data, size});
  fuzz::ReadGuestView(*device, fuzz::SmallOpenOptions(true));
  return 0;
}
