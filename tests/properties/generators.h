// RapidCheck generators for the explorer's properties: image options,
// engine options (policy, small caches) and guest workloads whose sizes
// force L2 allocation, L1 growth and refcount-table growth.
#pragma once

#include <rapidcheck.h>

#include "properties/runner.h"
#include "properties/workload.h"

namespace qcrash::properties {

inline rc::Gen<engine::CreateOptions> GenImageOptions() {
  return rc::gen::exec([] {
    engine::CreateOptions o;
    o.version = *rc::gen::weightedElement<uint32_t>({{1, 2}, {4, 3}});
    o.cluster_bits = *rc::gen::element<uint32_t>(9, 10, 12, 16);
    o.refcount_order = o.version == 2 ? 4 : *rc::gen::inRange<uint32_t>(0, 7);
    o.size_bytes = *rc::gen::element<uint64_t>(1, 2, 4, 8) << 20;
    return o;
  });
}

inline rc::Gen<GuestOp> GenOp(uint64_t size_bytes, uint64_t cluster_bytes) {
  const uint64_t sectors = size_bytes / kGuestSectorBytes;
  return rc::gen::exec([=] {
    GuestOp op;
    op.kind = *rc::gen::weightedElement<OpKind>({{8, OpKind::kWrite},
                                                 {2, OpKind::kWriteZeroes},
                                                 {2, OpKind::kDiscard},
                                                 {3, OpKind::kFlush}});
    if (op.kind == OpKind::kFlush) return op;
    // Cluster-aligned or not, a sector to a few clusters long.
    const bool aligned = *rc::gen::arbitrary<bool>();
    const uint64_t cluster_sectors = cluster_bytes / kGuestSectorBytes;
    uint64_t first = *rc::gen::inRange<uint64_t>(0, sectors);
    if (aligned) first -= first % cluster_sectors;
    uint64_t count = aligned ? cluster_sectors * *rc::gen::inRange<uint64_t>(1, 3)
                             : *rc::gen::inRange<uint64_t>(1, 2 * cluster_sectors + 2);
    count = std::max<uint64_t>(1, std::min(count, sectors - first));
    op.offset_bytes = first * kGuestSectorBytes;
    op.length_bytes = count * kGuestSectorBytes;
    op.may_unmap = *rc::gen::arbitrary<bool>();
    return op;
  });
}

inline rc::Gen<Workload> GenWorkload() {
  return rc::gen::exec([] {
    Workload w;
    w.name = "generated";
    w.image = *GenImageOptions();
    const uint64_t cluster_bytes = uint64_t{1} << w.image.cluster_bits;
    const int count = *rc::gen::inRange(1, 10);
    uint64_t size = w.image.size_bytes;
    for (int i = 0; i < count; ++i) {
      if (*rc::gen::inRange(0, 12) == 0) {  // grow: may relocate the L1 table
        size *= 2;
        w.ops.push_back({OpKind::kResize, 0, size, false});
        continue;
      }
      w.ops.push_back(*GenOp(size, cluster_bytes));
    }
    if (*rc::gen::arbitrary<bool>()) w.ops.push_back({OpKind::kClose, 0, 0, false});
    return w;
  });
}

// A policy that must survive every crash (not unsafe); lazy needs v3.
inline rc::Gen<engine::OpenOptions> GenSafeEngine(const Workload& workload) {
  return rc::gen::exec([version = workload.image.version] {
    engine::OpenOptions o;
    o.policy = *rc::gen::element(engine::OrderingPolicy::kWritethrough,
                                 engine::OrderingPolicy::kOrdered, engine::OrderingPolicy::kExtent,
                                 engine::OrderingPolicy::kLazy, engine::OrderingPolicy::kJournal);
    if (version < 3 && (o.policy == engine::OrderingPolicy::kLazy ||
                        o.policy == engine::OrderingPolicy::kJournal)) {
      o.policy = engine::OrderingPolicy::kOrdered;  // both need compat=1.1
    }
    o.l2_cache_tables = *rc::gen::element<uint32_t>(2, 3, 32);  // 2: every few writes evict
    o.refcount_cache_blocks = *rc::gen::element<uint32_t>(2, 8);
    o.extent_clusters = *rc::gen::element<uint32_t>(4, 32);
    return o;
  });
}

}  // namespace qcrash::properties
