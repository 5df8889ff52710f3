// Fuzz target: the write-log file parser (sim/write_log.h) and what
// `qcrash replay` does with a loaded log: re-encode, replay onto a bounded
// device, build the crash timeline and the views of its last point.
// Properties: Decode(Encode(log)) == log; no crash, UB, leak or OOM.
#include <cstddef>
#include <cstdint>

#include "engine/memory_device.h"
#include "fuzz/fuzz_support.h"
#include "fuzz/log_view.h"
#include "sim/crash_model.h"
#include "sim/crash_view.h"
#include "sim/write_log.h"

namespace {

using namespace qcrash;

bool SameLog(const sim::WriteLog& a, const sim::WriteLog& b) {
  if (a.size() != b.size() || a.sector_bytes() != b.sector_bytes() ||
      a.initial_size_bytes() != b.initial_size_bytes()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    const sim::LogRecord& x = a.record(i);
    const sim::LogRecord& y = b.record(i);
    if (x.kind != y.kind || x.offset_bytes != y.offset_bytes || x.length_bytes != y.length_bytes)
      return false;
    const auto dx = a.DataOf(x);
    const auto dy = b.DataOf(y);
    if (!std::equal(dx.begin(), dx.end(), dy.begin(), dy.end())) return false;
  }
  return true;
}

// The largest size any record gives the disk: the timeline materialises
// chunk tables of that size, so only logs inside the fuzz bound are built.
uint64_t MaxExtent(const sim::WriteLog& log) {
  uint64_t extent = log.initial_size_bytes();
  for (const sim::LogRecord& r : log.records()) {
    const uint64_t end =
        r.kind == sim::RecordKind::kResize ? r.offset_bytes : r.offset_bytes + r.length_bytes;
    extent = std::max(extent, end < r.offset_bytes ? ~uint64_t{0} : end);
  }
  return extent;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto decoded = sim::WriteLog::Decode({data, size});
  if (!decoded.ok()) return 0;
  const sim::WriteLog& log = *decoded;
  auto again = sim::WriteLog::Decode(log.Encode());
  if (!again.ok()) fuzz::Fail("an encoded write log decodes", again.status().ToString());
  if (!SameLog(log, *again)) fuzz::Fail("Decode(Encode(log)) == log", "the logs differ");
  MemoryDevice device({}, {}, fuzz::kMaxDeviceBytes);
  if (!device.Resize(std::min(log.initial_size_bytes(), fuzz::kMaxDeviceBytes), ResizeMode::kSparse)
           .ok())
    return 0;
  (void)sim::ReplayLog(log, log.size(), device);
  if (MaxExtent(log) > fuzz::kMaxDeviceBytes) return 0;
  if (log.sector_bytes() != 512 && log.sector_bytes() != 4096) return 0;
  fuzz::BuildLastPointView(log);
  return 0;
}
