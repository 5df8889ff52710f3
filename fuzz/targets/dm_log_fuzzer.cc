// Fuzz target: the dm-log-writes importer (sim/dm_log.h) behind
// `qcrash explore --log` and `--engine qemu`, and what explore does with an
// imported log: replay onto a bounded device, the crash timeline and a view
// of its last point.
// Properties: records_after counts up to the log's size, one per entry;
// marks sit inside the log; no crash, UB, leak or OOM.
#include <cstddef>
#include <cstdint>

#include "engine/memory_device.h"
#include "fuzz/fuzz_support.h"
#include "fuzz/log_view.h"
#include "sim/crash_model.h"
#include "sim/crash_view.h"
#include "sim/dm_log.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qcrash;
  auto imported = sim::ImportDmLog({data, size}, 64 * 1024);
  if (!imported.ok()) return 0;
  const sim::WriteLog& log = imported->log;
  if (imported->records_after.size() != imported->entries)
    fuzz::Fail("one records_after per entry", std::to_string(imported->records_after.size()));
  uint64_t previous = 0;
  for (const uint64_t n : imported->records_after) {
    if (n < previous || n > log.size()) fuzz::Fail("records_after counts up to the log's size", "");
    previous = n;
  }
  for (const sim::DmLogMark& mark : imported->marks) {
    if (mark.records > log.size()) fuzz::Fail("a mark sits inside the log", mark.name);
  }
  uint64_t extent = log.initial_size_bytes();
  for (const sim::LogRecord& r : log.records()) {
    if (r.offset_bytes + r.length_bytes < r.offset_bytes) fuzz::Fail("a record's end fits", "");
    extent = std::max(extent, r.offset_bytes + r.length_bytes);
  }
  if (extent > fuzz::kMaxDeviceBytes) return 0;
  MemoryDevice device({}, {}, fuzz::kMaxDeviceBytes);
  if (!device.Resize(log.initial_size_bytes(), ResizeMode::kSparse).ok()) return 0;
  if (Status replayed = sim::ReplayLog(log, log.size(), device); !replayed.ok())
    fuzz::Fail("an imported log replays", replayed.ToString());
  fuzz::BuildLastPointView(log);
  return 0;
}
