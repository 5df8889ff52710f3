// The steps of RecoverState (properties/recovery.cc), for the deduplicating
// recovery (properties/dedup.cc), which runs them on one state of a group
// and reuses what they found for the others.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/block_device.h"
#include "engine/image.h"
#include "properties/oracle.h"
#include "properties/recovery.h"
#include "properties/runner.h"

namespace qcrash::properties::recovery_internal {

// Sorted, disjoint guest byte ranges [first, second).
using GuestRanges = std::vector<std::pair<uint64_t, uint64_t>>;

// The crash state's second device (its external data file, or the backing
// file a commit wrote, M12) while the scope lasts: every open of the
// recovery reads it.
class ScopedDataFile {
 public:
  explicit ScopedDataFile(BlockDevice* device);
  ~ScopedDataFile();
  ScopedDataFile(const ScopedDataFile&) = delete;
  ScopedDataFile& operator=(const ScopedDataFile&) = delete;

 private:
  BlockDevice* saved_;
};

// A crash state's image opened read-only, with the workload's backing file
// and the state's second device.
Result<std::unique_ptr<engine::Image>> OpenStateReadOnly(BlockDevice& view, const WorkloadRun& run);

struct CorruptionSet;

// Step 1: the raw image's evidence (I1, I2).
void CheckRaw(BlockDevice& view, StateResult& result);
// Steps 2-4: open, close, repair twice (I3, I6, I7). False: not recovered.
bool Repair(BlockDevice& view, StateResult& result, const std::string& tag, bool raw_clean,
            CorruptionSet* started_from = nullptr);
// Step 5 (I4, I5, I10); with `skip`, the guest sectors in those ranges are
// read but not held against the oracle (the caller judges them).
void CheckContent(BlockDevice& view, const WorkloadRun& run, const GuestOracle& oracle,
                  uint64_t point, StateResult& result, const std::string& tag,
                  const GuestRanges* skip = nullptr);
// How CheckContent records the oracle's findings: a violation each, or
// under QEMU's data ordering an I5 as the stale-data verdict.
void AddContentViolations(const WorkloadRun& run, const std::vector<ContentViolation>& content,
                          StateResult& result, const std::string& tag);
void CheckSnapshots(BlockDevice& view, const WorkloadRun& run, const GuestOracle& oracle,
                    uint64_t point, StateResult& result);
void CheckBitmaps(BlockDevice& view, const WorkloadRun& run, const GuestOracle& oracle,
                  uint64_t point, StateResult& result);
// The verdict: the worst thing that happened.
void SetVerdict(bool repaired, StateResult& result);

}  // namespace qcrash::properties::recovery_internal
