// Fuzz target for persistent dirty bitmaps: the structure-aware mutator is
// built for this target with its bitmap focus (the bitmaps header extension,
// autoclear bit 0, directory entries with their flags, type, granularity and
// name, the bitmap tables; fuzz/README.md), and the seeds carry several
// bitmaps. The engine parses the directory in check and repair, so the
// properties are check_fuzzer's and repair_fuzzer's: a check writes
// nothing; after `check -r all` check is clean, a second repair writes
// nothing and the guest view reads. The engine also loads and stores
// bitmaps: a write session on the image as it is never crashes, and on the
// repaired image leaves check clean with every stored bitmap readable.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qcrash::fuzz::TablesListInsideTheFile({data, size});
  qcrash::fuzz::CheckWritesNothing({data, size});
  qcrash::fuzz::RepairLeavesCleanImage({data, size});
  qcrash::fuzz::BitmapsSurviveAWriteSession({data, size});
  return 0;
}
