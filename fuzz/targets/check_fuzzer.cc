// Fuzz target: check without repair. Properties: no crash, UB or hang, and
// a check that does not repair writes no byte of the image.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "engine/check.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qcrash;
  auto device = fuzz::MakeDevice({data, size});
  auto report = engine::CheckImage(*device, {engine::RepairMode::kNone});
  if (device->bytes().size() != size || (size > 0 && std::memcmp(device->bytes().data(), data, size) != 0)) {
    fuzz::Fail("check without repair writes nothing", "the image bytes changed");
  }
  if (report.ok() && report->bytes_written != 0) {
    fuzz::Fail("check without repair writes nothing", "bytes_written is not zero");
  }
  return 0;
}
