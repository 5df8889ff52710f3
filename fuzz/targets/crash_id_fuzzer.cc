// Fuzz target: the text parsers users type or paste: crash-state ids
// ("p12:40=0,41=2") and enumerator specs ("bounded:2@0/4"). Property: what
// parses formats back to text that parses to the same value.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/fuzz_support.h"
#include "sim/crash_model.h"
#include "sim/enumerators.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qcrash;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto state = sim::ParseCrashStateId(text); state.ok()) {
    const std::string id = sim::FormatCrashStateId(*state);
    auto again = sim::ParseCrashStateId(id);
    if (!again.ok())
      fuzz::Fail("a formatted crash-state id parses", id + ": " + again.status().ToString());
    if (!(*again == *state)) fuzz::Fail("Parse(Format(state)) == state", id);
  }
  if (auto spec = sim::ParseEnumeratorSpec(text); spec.ok()) {
    const std::string formatted = sim::FormatEnumeratorSpec(*spec);
    auto again = sim::ParseEnumeratorSpec(formatted);
    if (!again.ok()) fuzz::Fail("a formatted enumerator spec parses", formatted);
    if (sim::FormatEnumeratorSpec(*again) != formatted)
      fuzz::Fail("Format(Parse(Format(spec))) is stable", formatted);
  }
  return 0;
}
