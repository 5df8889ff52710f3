// StateDeduper: recovers each distinct metadata state of a crash point once
// and judges the states that differ from it only in guest data sectors by
// reading those sectors through its recovered mapping (issue 18).
//
// Why this is sound. Recovery (the raw check, the open, both repairs) is a
// deterministic function of the bytes it reads. Run it on one state, the
// group's representative, and record every byte range it reads: another
// state that differs only in sectors outside that set makes it read the same
// bytes, take the same decisions and write the same sectors, so its
// recovered image is its own crash image under the representative's
// recovery writes. Nothing here trusts a classification: a sector a group's
// recovery read is recovered in full for every state that changes it.
//
// What is grouped. A pending sector is "data" at a point when the recovery
// of the first state met there did not read it: the check walk reads every
// cluster the image names as metadata (header, L1, L2, refcount table and
// blocks, snapshot tables, bitmap directory and tables, the journal and its
// data blocks), so this is the prefix image's check map, taken from the
// recovery itself. The write log's own annotations are not used: a buggy
// engine may point an L2 entry at a cluster it wrote as guest data, or
// reuse a freed L2 cluster for data within one epoch (exactly the bugs the
// explorer hunts), and then a "data" write is metadata to recovery. A state's
// group is its choice vector over the other (metadata) sectors.
//
// How a state is judged. The representative is the state with the group's
// metadata choices and every data sector at its latest version (for the
// point's first group, the first state itself); its content check skips the
// guest sectors that read through data sectors. Each data
// sector's choice is then judged apart, once per group, by the oracle on the
// guest sectors that read through it (the oracle is per guest sector). Where
// that mapping is not a plain one (a compressed cluster, snapshots or
// bitmaps that also read the data, a whole-map check after a refcount
// rebuild, non-atomic sectors), the state's content checks run in full on
// its crash image under the recovery writes: still one recovery per group.
// A nested crash of recovery (I8) reads every sector: no deduplication.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "properties/oracle.h"
#include "properties/recovery.h"
#include "properties/runner.h"
#include "sim/crash_model.h"

namespace qcrash::properties {

class StateDeduper {
 public:
  StateDeduper(const WorkloadRun& run, const GuestOracle& oracle, const RecoveryOptions& options);
  ~StateDeduper();
  StateDeduper(const StateDeduper&) = delete;
  StateDeduper& operator=(const StateDeduper&) = delete;

  // What RecoverState gives for this state (the same verdict and the same
  // invariants; messages may quote another sector). Valid until the next call.
  const StateResult& Recover(const std::shared_ptr<const sim::CrashPoint>& point,
                             const sim::CrashState& state);

  uint64_t recoveries_run() const { return recoveries_; }
  uint64_t full_fallbacks() const { return fallbacks_; }  // states a group's reads forced back

  struct Group;
  struct PointCache;

 private:
  PointCache& Load(const std::shared_ptr<const sim::CrashPoint>& point);
  Group& GroupOf(PointCache& cache, const sim::CrashState& state);
  // The pending index of each deviation of `state` (-1: not pending), into index_.
  void IndexDeviations(const sim::CrashPoint& point, const sim::CrashState& state);
  std::string Key(const PointCache& cache, const sim::CrashState& state) const;
  std::unique_ptr<Group> RecoverGroup(PointCache& cache, const sim::CrashState& representative);

  const WorkloadRun& run_;
  const GuestOracle& oracle_;
  RecoveryOptions options_;
  bool enabled_ = true;
  std::unique_ptr<PointCache> cache_;
  StateResult result_;
  std::string key_;
  std::vector<ContentViolation> content_;  // scratch of Recover
  std::vector<uint32_t> deviated_;         // scratch of Recover
  std::vector<int64_t> index_;             // IndexDeviations
  uint64_t recoveries_ = 0;
  uint64_t fallbacks_ = 0;
};

}  // namespace qcrash::properties
