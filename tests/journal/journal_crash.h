// A small crash explorer for the journal, built directly on sim/: runs a
// workload on the engine over a SimDisk, enumerates crash states (prefix,
// drop-one, tear-one), recovers each (Image::Open replays the journal), and
// checks the invariants: I1/I2 (check finds no corruption), I4/I5 (each
// guest block reads its durable value or a value written after the last
// completed flush), I6 (replay wrote into no guest data cluster and into no
// range a later transaction revoked) and, for sampled states, I8 (a crash
// during replay, then recovery again, still passes).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/options.h"

namespace qcrash::engine::testing {

// One workload step on 4 KiB guest blocks.
struct Step {
  enum Kind : uint8_t { kWrite, kFlush, kDiscard, kGrow } kind = kWrite;
  uint64_t block = 0;       // guest block (4 KiB) for write/discard
  uint8_t value = 0;        // fill byte for write
  uint64_t size_bytes = 0;  // kGrow: new virtual size
};

struct Workload {
  std::string name;
  uint64_t initial_size_bytes = 1 << 20;
  std::vector<Step> steps;
};

// Kevin's scenario (QCOW2-NOTES §12.9): an L2 allocation journals an L1
// entry; the L1 grows and the old L1 is freed; the freed cluster is reused
// for guest data; crash before any sync.
Workload ThreadScenario();
// Writes, rewrites, discards and flushes over several L2 tables with a ring
// small enough to wrap and checkpoint.
Workload MixedWorkload();

struct CrashConfig {
  OpenOptions open;  // policy, journal variant, bug switches
  std::vector<std::string> enumerators = {"prefix", "drop-one", "tear-one"};
  uint32_t nested_samples = 8;  // states whose recovery is crashed again (I8)
};

struct CrashResult {
  uint64_t states = 0;
  uint64_t violations = 0;
  std::string first_violation;  // "<enumerator> <state id>: <invariant>: <detail>"
  std::string
      minimal_violation;  // the violating state with the smallest point and fewest deviations
  uint64_t guest_flushes = 0;
  uint64_t device_flushes = 0;
};

CrashResult RunCrashCheck(const Workload& workload, const CrashConfig& config);

}  // namespace qcrash::engine::testing
