// The workload + crash harness shared by workload_crash_fuzzer and the
// canary: fuzz input -> image options, guest operations and one crash state
// of the simulated disk; recovery (check, repair, check) and the invariants
// of DESIGN.md (I1, I2, I4, I5, I7) asserted on that state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/options.h"
#include "fuzz/fuzz_support.h"

namespace qcrash::fuzz {

enum class GuestOpKind : uint8_t { kWrite, kZeroKeep, kZeroUnmap, kDiscard, kFlush };

// Sector-aligned guest operations (a sector is 512 guest bytes here), so the
// oracle can track one tag per sector.
struct GuestOp {
  GuestOpKind kind = GuestOpKind::kWrite;
  uint64_t first_sector = 0;
  uint64_t sector_count = 0;
};

struct WorkloadCase {
  engine::CreateOptions create;
  engine::OpenOptions open;
  uint32_t device_sector_bytes = 512;  // the simulated disk's atomic unit
  std::vector<GuestOp> ops;
  // Pre-repair check must find no corruption (I1, I2): the strict policies.
  bool strict_before_repair = true;
};

// Decodes options and operations from the front of the input; the reader is
// left at the crash choices.
WorkloadCase DecodeWorkload(ByteReader& reader);

// Runs the case on a SimDisk, builds the crash state the remaining input
// chooses, recovers it and checks the invariants. Returns "" when every
// invariant holds, else the first violation (property name and detail).
struct Violation {
  std::string property;
  std::string detail;
  bool found() const { return !property.empty(); }
};
Violation RunWorkloadCrashCase(const WorkloadCase& workload, ByteReader& crash_choices);

}  // namespace qcrash::fuzz
