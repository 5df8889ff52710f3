// Process isolation: run a workload against a SimDisk in a child process
// whose write log streams into shared memory, so the parent still holds the
// log when the child is SIGKILLed or dies on its own (a sanitizer, an abort).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/status.h"
#include "sim/sim_disk.h"
#include "sim/write_log.h"

namespace qcrash::sim {

struct IsolationOptions {
  uint64_t log_capacity_bytes = uint64_t{64} << 20;  // the shared segment's size
  // The parent SIGKILLs the child once this many records are in the log
  // (0 = never on a count).
  uint64_t kill_after_records = 0;
  // The parent SIGKILLs the child after a delay drawn uniformly from
  // [0, kill_within_micros] by seed (0 = never on a timer): "a random instant".
  uint64_t kill_within_micros = 0;
  uint64_t seed = 0;
  // A child still alive after this is killed and the run reports a timeout.
  uint64_t timeout_millis = 30000;
};

struct IsolatedRun {
  WriteLog log;  // every record the child completed before it died
  bool killed_by_parent = false;
  bool timed_out = false;
  int exit_code = -1;           // when the child exited on its own
  int signal = 0;               // when a signal ended it (SIGKILL from us, SIGABRT, ...)
  bool log_overflowed = false;  // the segment filled up; later writes failed in the child
};

// The workload runs in the child on a SimDisk built from options and initial;
// its return Status sets the exit code (0 when ok, 1 otherwise). Only the
// records the child completed (whole, in order) are in the returned log:
// each record is made visible by one release store of the committed length.
Result<IsolatedRun> RunIsolated(const SimDiskOptions& options,
                                std::shared_ptr<const ChunkedImage> initial,
                                const std::function<Status(SimDisk&)>& workload,
                                const IsolationOptions& isolation = {});

}  // namespace qcrash::sim

namespace qcrash::sim {

// Runs work(0) .. work(workers - 1) in forked child processes at once; each
// child's returned string travels back through an anonymous shared-memory
// segment (at most result_capacity_bytes each). A child that dies, times out
// or overflows its slot fails the whole run with a clear error.
Result<std::vector<std::string>> RunForkedWorkers(uint32_t workers,
                                                  const std::function<std::string(uint32_t)>& work,
                                                  uint64_t result_capacity_bytes = uint64_t{16}
                                                                                   << 20,
                                                  uint64_t timeout_millis = 3600 * 1000);

}  // namespace qcrash::sim
