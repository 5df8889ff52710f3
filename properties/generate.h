// Generated workloads, swarm style: each seed switches operation kinds and
// engine features on or off, so that across seeds every path is reached
// (refcount-table growth past the first table's reach, L1 growth, L2 tables
// on reused clusters, cache eviction, unaligned I/O) without a workload
// written for each. `--workload random:SEED[:OPS]` names one.
#pragma once

#include <cstdint>
#include <string>

#include "engine/status.h"
#include "properties/runner.h"
#include "properties/workload.h"

namespace qcrash::properties {

struct GeneratedCase {
  Workload workload;
  RunOptions run;        // cache sizes, sector size, data ordering, journal variant
  std::string features;  // what this seed switched on, for humans
};

// The case of `seed` for `policy` (the policy is the caller's: a suite runs
// each seed under every policy). `ops` 0 picks a length from the seed.
// Deterministic: the same arguments give the same case.
GeneratedCase GenerateCase(uint64_t seed, size_t ops, engine::OrderingPolicy policy);

// "random:SEED" or "random:SEED:OPS" (the text after "random:"); false when
// it is not one.
bool ParseRandomSpec(const std::string& spec, uint64_t& seed, size_t& ops);

}  // namespace qcrash::properties
