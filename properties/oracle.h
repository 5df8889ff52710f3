// GuestOracle: what each guest sector may read after a crash at a given
// point (STYLE.md habit 10). A sector must read exactly its value as of the
// last completed guest flush (I4) unless an operation issued after that
// flush touched it; then it may also read any value those operations wrote
// (old-or-new, I5). Anything else is foreign data or garbage. A snapshot
// revert is one more value per sector, durable once it returns: what the
// sector held when the snapshot was created (old-or-new while it runs).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/status.h"
#include "properties/runner.h"

namespace qcrash::properties {

struct ContentViolation {
  std::string invariant;  // "I4" or "I5"
  uint64_t guest_offset = 0;
  std::string message;
};

class GuestOracle {
 public:
  explicit GuestOracle(const WorkloadRun& run);

  // Guest ranges [offset, offset+length) the workload touched, widened to
  // whole clusters, merged, in order: the only sectors whose allowed values
  // differ from zero, and the clusters around them.
  const std::vector<std::pair<uint64_t, uint64_t>>& touched_ranges() const { return ranges_; }

  // The guest sizes the disk may have after a crash at point p: the last
  // acknowledged resize's (a resize is durable once it returns), or the
  // size of a resize in flight at p. The first is the acknowledged one.
  std::vector<uint64_t> SizesAt(uint64_t point) const;

  // Checks the bytes of `guest_offset` .. (a multiple of 512 bytes) as read
  // after a crash at `point`; appends violations (at most `max` of them).
  void Check(uint64_t point, uint64_t guest_offset, std::span<const uint8_t> bytes,
             std::vector<ContentViolation>& out, size_t max = 8) const;

 private:
  // Operation `op_index` had returned successfully by `point`.
  bool AcknowledgedAt(size_t op_index, uint64_t point) const;
  struct Write {
    uint32_t op_index;
    uint64_t tag;  // 0 = zeroes
    bool discard;  // a discard may leave the old value (partial clusters) or zeroes
    // The bytes of the sector it covers, [lo, hi): all of it but for an
    // operation that starts or ends inside the sector.
    uint16_t lo = 0;
    uint16_t hi = kGuestSectorBytes;
    // A shrink's zeroes: durable once the resize returns, as its size is.
    // A revert too.
    bool durable_at_ack = false;
    // A revert: the sector's value is what it was when snapshot-create
    // operation `snapshot_op` ran (tag and discard unused).
    uint32_t snapshot_op = kNoSnapshot;
  };
  static constexpr uint32_t kNoSnapshot = UINT32_MAX;
  // What a sector (or byte `b` of it) held when snapshot-create operation
  // `create_op` ran: every earlier write had been made durable by the
  // create. A value, or after a discard that value or zeroes.
  struct Value {
    uint64_t tag = 0;  // ValueAt: the sector's tag; ByteAt: the byte
    bool or_zero = false;
  };
  Value ValueAt(const std::vector<Write>& writes, uint64_t sector, uint32_t create_op) const;
  Value ByteAt(const std::vector<Write>& writes, uint64_t sector, uint32_t create_op,
               uint64_t b) const;
  // The disk's size when operation `op_index` started, every earlier
  // operation complete.
  uint64_t SizeBefore(size_t op_index) const;
  // `w` is durable at `point`: before the last flush, or a shrink that had returned.
  bool DurableAt(const Write& w, int64_t flush_index, uint64_t point) const;
  // A sector some operation covered in part, checked byte by byte.
  void CheckBytes(uint64_t point, int64_t flush_index, uint64_t sector,
                  const std::vector<Write>& writes, const uint8_t* bytes,
                  std::vector<ContentViolation>& out) const;
  // A safe rebase in flight at `point` may be copying `sector`: its copies
  // are guest writes of the bytes the sector already holds, unacknowledged
  // until the rebase returns (under QEMU's data ordering a crash may show
  // what the new host cluster held: stale data, as for any write in flight).
  bool RebaseInFlight(uint64_t point, uint64_t sector) const;
  const WorkloadRun& run_;
  std::vector<std::pair<uint64_t, uint64_t>> ranges_;
  std::vector<std::pair<size_t, uint64_t>> rebases_;  // op index, end of the range it may copy
  // Per touched sector (indexed through sector_index_), its writes in order.
  std::vector<uint64_t> sectors_;            // sorted guest sector numbers
  std::vector<std::vector<Write>> history_;  // parallel to sectors_
  std::vector<bool> partial_;                // parallel to sectors_: a write covers it in part
};

}  // namespace qcrash::properties
