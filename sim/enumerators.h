// Crash-state enumerators: prefix, drop-one, tear-one, bounded(K),
// exhaustive(limit), random(seed, N) and epochs, each deterministic, each
// with a count computed without recovering a state, each splittable into
// disjoint shards.
//
// Why epochs: a missing barrier merges two flush epochs, and the state that
// shows it is one where a later write of the merged epoch landed and an
// earlier one did not. At an epoch's last point every write of it is
// pending, so dropping each write in turn, and landing each alone, finds
// that state in 2 x (writes) states instead of drop-one's sum over every
// point of every pending sector.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/status.h"
#include "sim/crash_model.h"
#include "sim/crash_view.h"  // BuildView returns views: callers need the complete type

namespace qcrash::sim {

enum class EnumeratorKind : uint8_t {
  kPrefix,       // one state per point: records [0, p) landed in order
  kDropOne,      // per point and pending sector: that sector durable, the rest latest
  kTearOne,      // per multi-sector (non-FUA) write w at point w+1: its first t sectors
                 // landed, the others hold their version before w (1 <= t < sectors)
  kBounded,      // per point: every state with at most K sectors not at latest
  kExhaustive,   // per point whose product of choices is <= limit: all of them
  kRandom,       // N distinct states drawn uniformly from every state of every point
                 // (all of them when there are N or fewer), from a seed
  kEpochs,       // per flush epoch, at its last point, per write w of it: w alone lost
                 // (its sectors hold their version before w), and w alone landed
                 // (every other pending sector durable); epochs that write the
                 // device's first sector (a header switch) come first
  kBoundedEnds,  // bounded(K) at the last point of each flush epoch only (the epochs'
                 // order): two writes of one epoch lost together, or a sector
                 // written twice left at its middle version while another is lost
  kData,         // per point: every combination of the data sectors' choices (a
                 // sector is data when guest-data records wrote all its pending
                 // versions, EnumeratorSpec::data_records), the other pending
                 // sectors at latest; at most <limit> per point, odometer order
                 // (all data durable first, the last data sector fastest), in
                 // two rounds: each point's first 16 states, then the rest
};

// Text form: "prefix", "drop-one", "tear-one", "bounded:<K>",
// "exhaustive:<limit>", "random:<seed>:<N>", "epochs", "bounded-ends:<K>",
// "data:<limit>", each
// optionally followed by
// "@<i>/<N>" for shard i of N (0 <= i < N).
struct EnumeratorSpec {
  EnumeratorKind kind = EnumeratorKind::kPrefix;
  uint64_t bound = 1;         // K for kBounded and kBoundedEnds
  uint64_t limit = 1u << 20;  // for kExhaustive and kData
  uint64_t seed = 0;          // for kRandom
  uint64_t samples = 1000;    // N for kRandom
  uint64_t shard_index = 0;
  uint64_t shard_count = 1;
  // kData: which log records wrote guest data (indexed by record; set from
  // the run, not the text: properties' ResolveEnumerator classifies them).
  // Null: no sector is data, and data:<limit> yields each point's latest state.
  // Only a choice of states: whether recovery reads a sector is decided by the
  // deduplicator (properties/dedup.h), so a wrong class costs time, not soundness.
  std::shared_ptr<const std::vector<bool>> data_records = nullptr;
};

Result<EnumeratorSpec> ParseEnumeratorSpec(std::string_view text);
std::string FormatEnumeratorSpec(const EnumeratorSpec& spec);

// The states one spec yields, in a fixed order. State k of the unsharded
// order belongs to shard k mod N, so the shards are disjoint and their union
// is the whole sequence, for every enumerator.
class CrashEnumerator {
 public:
  virtual ~CrashEnumerator() = default;
  static std::unique_ptr<CrashEnumerator> Create(const CrashTimeline& timeline,
                                                 const EnumeratorSpec& spec);

  // The next state of this shard, or false at the end.
  bool Next(CrashState* state);
  // The point of the state Next() returned (build views from it: no recompute).
  const std::shared_ptr<const CrashPoint>& point() const { return point_; }
  // The unsharded index of the state Next() returned.
  uint64_t index() const { return index_ - 1; }
  // Points exhaustive() skipped because their product passed the limit.
  uint64_t skipped_points() const { return skipped_points_; }

 protected:
  explicit CrashEnumerator(const CrashTimeline& timeline) : timeline_(timeline) {}
  virtual bool NextUnsharded(CrashState* state) = 0;
  // Steps past the next state without building it (another shard's); false
  // at the end. An enumerator whose states cost to build overrides it.
  virtual bool SkipUnsharded() { return NextUnsharded(&skipped_); }
  // Loads point p into point_ unless it is already there.
  void LoadPoint(uint64_t p);

  const CrashTimeline& timeline_;
  std::shared_ptr<const CrashPoint> point_;
  uint64_t skipped_points_ = 0;

 private:
  CrashState skipped_;
  uint64_t index_ = 0;
  uint64_t shard_index_ = 0;
  uint64_t shard_count_ = 1;
};

// The closed form of the number of states spec yields (its shard only, when
// sharded), computed from the points' shapes without enumerating.
uint64_t CountCrashStates(const CrashTimeline& timeline, const EnumeratorSpec& spec);

// Saturating helpers shared by the counts (a count never wraps).
uint64_t SaturatingAdd(uint64_t a, uint64_t b);
uint64_t SaturatingMul(uint64_t a, uint64_t b);

}  // namespace qcrash::sim
