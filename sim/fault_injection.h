// I/O-error injection for the simulated disk: EIO on the Nth read, write or
// flush or on an offset range, one-shot or sticky, like QEMU's blkdebug
// rules; ENOSPC once writes pass a size. Separate from crash faults (habit 9).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/status.h"

namespace qcrash::sim {

enum class IoOp : uint8_t { kRead, kWrite, kFlush };  // a FUA write is a kWrite

// One rule. It matches an operation of its kind when both of its conditions
// hold: the operation is the nth_op-th of that kind (1-based; 0 = any), and
// its byte range overlaps [range_offset_bytes, + range_length_bytes) (a zero
// length = any offset). A one-shot rule fires on its first match and retires;
// a sticky rule fires on every match, and with nth_op set on that operation
// and every later one of its kind (the device stays broken), as blkdebug's
// "once=off".
struct ErrorRule {
  IoOp op = IoOp::kWrite;
  uint64_t nth_op = 0;
  uint64_t range_offset_bytes = 0;
  uint64_t range_length_bytes = 0;
  bool sticky = false;
  StatusCode code = StatusCode::kIoError;  // EIO; kNoSpace gives ENOSPC
};

// The I/O-error settings of one disk: one documented struct (habit 9). The
// rules are deterministic, so no seed is needed to reproduce them.
struct FaultRules {
  std::vector<ErrorRule> rules = {};
  // Writes (and growing resizes) whose end passes this size fail with
  // NoSpace; 0 = no limit. The disk's own growth bound still applies.
  uint64_t no_space_after_bytes = 0;
};

class FaultInjector {
 public:
  FaultInjector() = default;
  explicit FaultInjector(FaultRules rules);

  // Counts the operation and returns the injected error, if a rule fires.
  Status Check(IoOp op, uint64_t offset_bytes, uint64_t length_bytes);
  // NoSpace when [offset, offset + length) passes no_space_after_bytes.
  Status CheckSpace(uint64_t end_bytes) const;

  uint64_t op_count(IoOp op) const { return counts_[static_cast<size_t>(op)]; }
  uint64_t fired_count() const { return fired_; }
  void AddRule(const ErrorRule& rule) { rules_.push_back({rule, false}); }
  void set_no_space_after_bytes(uint64_t bytes) { no_space_after_bytes_ = bytes; }

 private:
  struct ActiveRule {
    ErrorRule rule;
    bool retired;
  };
  std::vector<ActiveRule> rules_;
  uint64_t no_space_after_bytes_ = 0;
  uint64_t counts_[3] = {0, 0, 0};
  uint64_t fired_ = 0;
};

}  // namespace qcrash::sim
