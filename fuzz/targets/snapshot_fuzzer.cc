// Fuzz target for the snapshot table: the structure-aware mutator is built
// for this target with its snapshot focus (header nb_snapshots and
// snapshots_offset, entry fields and extra data, the snapshots' L1 tables;
// fuzz/README.md), and the seeds carry several snapshots. The engine parses
// the table in check and repair, so the properties are check_fuzzer's and
// repair_fuzzer's: a check writes nothing; after `check -r all` check is
// clean, a second repair writes nothing and the guest view reads; and what
// `info` lists decodes inside the file.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qcrash::fuzz::TablesListInsideTheFile({data, size});
  qcrash::fuzz::CheckWritesNothing({data, size});
  qcrash::fuzz::RepairLeavesCleanImage({data, size});
  return 0;
}
