// QEMU's own qcow2 driver as the engine under test. The workload runs
// through one interactive qemu-io over QEMU's blklogwrites driver, which
// logs every write, flush and discard the qcow2 driver sends to the image
// file in the dm-log-writes format (sim/dm_log.h). After each command the
// log's superblock count (log-super-update-interval=1) marks where the
// operation ended, so the imported log carries the same operation spans a
// run of our engine does: every enumerator, the recovery and the guest
// oracle then work on it unchanged.
//
// Also: a dm-log-writes log of anything (blklogwrites, Linux's
// dm-log-writes target) over a base image, explored with the structural
// invariants alone; and `qemu-img check` of a crash image, the
// differential verdict.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/status.h"
#include "properties/runner.h"

namespace qcrash::properties {

// Runs `workload` through options.qemu's qemu-io. The image is made by
// qemu-img create with the workload's options, with RunOptions'
// junk free clusters appended. With `after_ops`, the image file's bytes
// after each operation (for tests: the prefix state at an operation's end
// must equal them).
Result<WorkloadRun> RunWorkloadOnQemu(const Workload& workload, const RunOptions& options,
                                      std::vector<std::vector<uint8_t>>* after_ops = nullptr);

// "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)", from `qemu-io --version`.
Result<std::string> QemuVersion(const std::string& qemu_io);

// A run of no workload: `log_path`'s writes over the image `base_path`
// (the image the log started on). Marks, when the log has them, bound the
// spans; the run holds only structural invariants.
Result<WorkloadRun> RunFromDmLog(const std::string& log_path, const std::string& base_path);

// `qemu-img check --output=json` of the image file `path` (a reproducer's
// image.qcow2, its backing file beside it): its exit code and counts.
struct QemuCheck {
  int exit_code = -1;  // 0 clean, 2 corruptions, 3 leaks, 1 check failed
  uint64_t corruptions = 0;
  uint64_t leaks = 0;
  uint64_t check_errors = 0;
  std::string output;  // the JSON, or the error text
};
Result<QemuCheck> QemuImgCheck(const std::string& qemu_img, const std::string& path);

}  // namespace qcrash::properties
