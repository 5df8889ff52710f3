// I/O errors against the engine (QEMU's iotest 026 contract): an injected
// EIO on one device request of a workload, each read, write (or FUA write)
// and flush in turn. The engine must fail the guest operation that met the
// error (a failed flush is never acknowledged), and the image it leaves,
// once the guest gives up and closes it, must recover as a crash image
// does: nothing dangling or over-referenced, leaks at most, flushed data
// intact, every other sector old-or-new. All of it is invariant I13.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/status.h"
#include "properties/recovery.h"
#include "properties/runner.h"
#include "sim/fault_injection.h"

namespace qcrash::properties {

// One injected error: the nth (1-based) request of its kind fails once.
// With `backing`, the nth read of the backing file (a copy-on-write's).
struct IoErrorCase {
  sim::IoOp op = sim::IoOp::kWrite;
  uint64_t nth = 1;
  bool backing = false;  // op is kRead
};

// "eio:write#12", "eio:flush#3", "eio:read#40", "eio:backing-read#2": the
// state id of a case.
std::string FormatIoErrorCase(const IoErrorCase& c);
bool IsIoErrorStateId(std::string_view id);
Result<IoErrorCase> ParseIoErrorCase(std::string_view id);

// Every case of a run that met no error: each flush, write and read it
// made, then each read of the backing file, in that order.
std::vector<IoErrorCase> IoErrorCases(const WorkloadRun& clean_run);

struct IoErrorOutcome {
  StateResult result;
  bool fired = false;    // the error met a request (another path may make fewer)
  std::string op_class;  // the kind of guest operation it met ("write", "flush"; "open")
};

// Runs `workload` with the error injected and checks I13.
Result<IoErrorOutcome> CheckIoErrorCase(const Workload& workload, const RunOptions& options,
                                        const IoErrorCase& c);

}  // namespace qcrash::properties
