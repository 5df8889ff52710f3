// Swarm generation: a seed picks the image geometry, the engine
// configuration and which operation kinds (and shapes) the workload uses.
#include "properties/generate.h"

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <initializer_list>
#include <set>
#include <vector>

namespace qcrash::properties {
namespace {

// SplitMix64: small, fast and the same everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }
  bool OneIn(uint64_t n) { return Below(n) == 0; }
  template <typename T>
  T Pick(std::initializer_list<T> items) {
    return *(items.begin() + Below(items.size()));
  }

 private:
  uint64_t state_;
};

struct Swarm {
  bool zeroes, discard, flush, resize, unaligned, multi_cluster, rewrites, close_at_end, reopen,
      reads, backing;
  bool bytes = false;      // ranges that start or end inside a sector
  bool snapshots = false;  // internal snapshots created, deleted and reverted to between operations
  bool bitmaps = false;    // persistent dirty bitmaps added, cleared, toggled, removed
  bool subclusters = false;  // extended L2 entries: 32 subclusters per cluster
  bool compressed = false;   // some writes stored compressed (whole clusters), zlib or zstd
};

std::string Describe(const Swarm& s) {
  std::string out;
  auto add = [&out](bool on, const char* name) {
    if (on) out += std::string(out.empty() ? "" : ",") + name;
  };
  add(s.zeroes, "zeroes");
  add(s.discard, "discard");
  add(s.flush, "flush");
  add(s.resize, "resize");
  add(s.unaligned, "unaligned");
  add(s.multi_cluster, "multi-cluster");
  add(s.rewrites, "rewrites");
  add(s.close_at_end, "close");
  add(s.reopen, "reopen");
  add(s.reads, "reads");
  add(s.backing, "backing");
  add(s.bytes, "bytes");
  add(s.snapshots, "snapshots");
  add(s.bitmaps, "bitmaps");
  add(s.subclusters, "subclusters");
  return out;
}

}  // namespace

GeneratedCase GenerateCase(uint64_t seed, size_t ops, engine::OrderingPolicy policy) {
  Rng r(seed);
  GeneratedCase c;
  Workload& w = c.workload;
  w.name = "random:" + std::to_string(seed) + (ops ? ":" + std::to_string(ops) : "");
  const bool needs_v3 =
      policy == engine::OrderingPolicy::kLazy || policy == engine::OrderingPolicy::kJournal;
  w.image.version = !needs_v3 && r.OneIn(5) ? 2 : 3;
  w.image.cluster_bits = r.Pick<uint32_t>({9, 9, 10, 12, 12, 16});
  w.image.refcount_order = w.image.version == 2 ? 4 : static_cast<uint32_t>(r.Below(7));
  // Small clusters with wide refcounts: a refcount block covers few
  // clusters, so a few MiB of writes outgrow the first refcount table.
  const bool grow_refcounts =
      w.image.cluster_bits == 9 && w.image.refcount_order >= 5 && r.OneIn(2);
  w.image.size_bytes = (grow_refcounts ? r.Pick<uint64_t>({4, 8}) : r.Pick<uint64_t>({1, 2, 4, 8}))
                       << 20;

  Swarm s{r.OneIn(2), r.OneIn(2), !r.OneIn(4), r.OneIn(3), r.OneIn(2), grow_refcounts || r.OneIn(2),
          r.OneIn(2), r.OneIn(2), r.OneIn(3),  r.OneIn(2), r.OneIn(4)};
  // Byte-granular ranges come from a stream of their own, so a seed
  // without them generates what it did before they existed.
  Rng byte_rng(seed ^ 0x6279746573ull);
  s.bytes = s.unaligned && byte_rng.OneIn(2);
  // A raw backing file under the image: partial writes copy from it.
  if (s.backing) SetBacking(w);
  // Extended L2 entries from a stream of their own (v3, clusters of 16 KiB
  // and more, so subclusters of 512 bytes and more): writes, zero writes
  // and discards then work per subcluster.
  Rng subcluster_rng(seed ^ 0x737562636c757374ull);
  s.subclusters = w.image.version >= 3 && subcluster_rng.OneIn(4);
  if (s.subclusters) {
    w.image.extended_l2 = true;
    w.image.cluster_bits =
        std::max(w.image.cluster_bits, static_cast<uint32_t>(14 + subcluster_rng.Below(3)));
  }
  c.features = Describe(s);

  RunOptions& run = c.run;
  run.open.policy = policy;
  run.open.l2_cache_tables = r.Pick<uint32_t>({1, 2, 4, 32});
  run.open.refcount_cache_blocks = r.Pick<uint32_t>({1, 2, 8});
  run.open.extent_clusters = r.Pick<uint32_t>({4, 32});
  run.open.data_ordering = r.OneIn(3) ? engine::DataOrdering::kQemu : engine::DataOrdering::kStrict;
  run.sector_bytes = r.OneIn(4) ? 4096 : 512;
  if (policy == engine::OrderingPolicy::kJournal) {
    engine::JournalOptions& j = run.open.journal;
    j.commit = r.OneIn(2) ? engine::JournalCommit::kHeader : engine::JournalCommit::kDescriptorFlag;
    j.recovery = r.OneIn(2) ? engine::JournalRecovery::kHeaderBookkeeping
                            : engine::JournalRecovery::kScanOnly;
    j.terminator = r.OneIn(2) ? engine::JournalTerminator::kBlankBlock
                              : engine::JournalTerminator::kEscapeFlag;
    j.byte_sum_checksum = r.OneIn(3);
    // Down to the smallest ring that holds one cluster's metadata change:
    // a new L2 table and refcount block placed on reused (junk) clusters are
    // journalled whole, so the ring needs a few clusters at least.
    j.size_bytes = std::max(r.Pick<uint64_t>({16 << 10, 32 << 10, 64 << 10, 1 << 20}),
                            uint64_t{8} << w.image.cluster_bits);
  }
  c.features += std::string(c.features.empty() ? "" : ",") +
                "l2cache=" + std::to_string(run.open.l2_cache_tables) +
                ",rccache=" + std::to_string(run.open.refcount_cache_blocks) +
                ",sector=" + std::to_string(run.sector_bytes);

  const uint64_t cluster = uint64_t{1} << w.image.cluster_bits;
  // Shrinks come from a stream of their own too (a v2 image over a backing
  // file cannot shrink: no zero clusters to hide the backing file with).
  Rng shrink_rng(seed ^ 0x736872696e6bull);
  const bool can_shrink = !(s.backing && w.image.version < 3);
  const uint64_t cluster_sectors = cluster / kGuestSectorBytes;
  const size_t count = ops ? ops : 8 + r.Below(grow_refcounts ? 56 : 32);
  uint64_t size = w.image.size_bytes;
  std::vector<std::pair<uint64_t, uint64_t>> written;  // earlier write ranges, for rewrites
  // A range: cluster-aligned whole clusters, or (unaligned) any run of sectors.
  auto range = [&](GuestOp& op) {
    const uint64_t sectors = size / kGuestSectorBytes;
    uint64_t first, length;
    if (s.rewrites && !written.empty() && r.OneIn(3)) {
      const auto& [at, len] = written[r.Below(written.size())];
      first = at / kGuestSectorBytes;
      length = len / kGuestSectorBytes;
      if (s.unaligned && length > 1 && r.OneIn(2)) {  // a part of it
        const uint64_t skip = r.Below(length);
        first += skip;
        length = 1 + r.Below(length - skip);
      }
    } else {
      const uint64_t max_clusters = grow_refcounts ? 64 : s.multi_cluster ? 4 : 1;
      if (s.unaligned && r.OneIn(2)) {
        first = r.Below(sectors);
        length = 1 + r.Below(max_clusters * cluster_sectors + 1);
      } else {
        first = r.Below(sectors / cluster_sectors) * cluster_sectors;
        length = (1 + r.Below(max_clusters)) * cluster_sectors;
      }
    }
    first = std::min(first, sectors - 1);
    length = std::max<uint64_t>(1, std::min({length, sectors - first, uint64_t{16} << 20 >> 9}));
    op.offset_bytes = first * kGuestSectorBytes;
    op.length_bytes = length * kGuestSectorBytes;
    if (s.bytes && byte_rng.OneIn(2)) {
      // Start and end inside a sector: the engine merges the rest of the
      // sector (and of its cluster) itself.
      const uint64_t head = byte_rng.Below(kGuestSectorBytes);
      const uint64_t tail = byte_rng.Below(kGuestSectorBytes);
      op.offset_bytes += head;
      op.length_bytes = std::max<uint64_t>(
          1, op.length_bytes - head - std::min(tail, op.length_bytes - head - 1));
    }
  };
  // Snapshots come from a stream of their own, so that other seeds' cases
  // stay as they were. v3 only (the sharing change runs under the dirty
  // bit), and not under the journal policy, which writes no snapshot yet.
  // Each snapshot adds a reference to every shared cluster: refcounts of
  // 16 bits and more (a create that would overflow is refused).
  Rng snap_rng(seed ^ 0x736e617073686f74ull);
  s.snapshots = w.image.version >= 3 && policy != engine::OrderingPolicy::kJournal &&
                w.image.refcount_order >= 4 && snap_rng.OneIn(4);
  if (s.snapshots) c.features += std::string(c.features.empty() ? "" : ",") + "snapshots";
  // An external data file from a stream of its own (v3, no backing file,
  // no internal snapshots, which QEMU refuses with a data file): the image
  // and its data file are two devices of the crash model (sim M11), raw or not.
  Rng data_file_rng(seed ^ 0x6461746166696c65ull);
  if (w.image.version >= 3 && !s.backing && !s.snapshots && data_file_rng.OneIn(4)) {
    const bool raw = data_file_rng.OneIn(2);
    SetDataFile(w, raw);
    c.features +=
        std::string(c.features.empty() ? "" : ",") + (raw ? "data-file-raw" : "data-file");
  }
  // Bitmaps come from their own stream too: v3 only (the autoclear bit),
  // not under the journal policy, which keeps no bitmap yet. The first is
  // added and stored by a close before anything else, so that later
  // sessions write under a bitmap that is on disk (R10, I11).
  Rng bitmap_rng(seed ^ 0x6269746d61707321ull);
  s.bitmaps =
      w.image.version >= 3 && policy != engine::OrderingPolicy::kJournal && bitmap_rng.OneIn(4);
  if (s.bitmaps) c.features += std::string(c.features.empty() ? "" : ",") + "bitmaps";
  // Compressed writes from a stream of their own as well: not under the
  // journal policy, which writes none, nor with a data file, which QEMU
  // and the engine refuse them in (the stream is not drawn from then, so
  // other seeds' cases stay as they were). Some of the writes become whole-
  // cluster compressed writes; on v3 the image may use zstd.
  Rng compress_rng(seed ^ 0x636f6d7072657373ull);
  s.compressed = policy != engine::OrderingPolicy::kJournal && w.image.data_file.empty() &&
                 compress_rng.OneIn(4);
  if (s.compressed) {
    const bool zstd = w.image.version >= 3 && compress_rng.OneIn(2);
    if (zstd) w.image.compression_type = engine::CompressionType::kZstd;
    c.features +=
        std::string(c.features.empty() ? "" : ",") + (zstd ? "compressed-zstd" : "compressed");
  }
  // Amends (qemu-img amend -o) from a stream of their own: not under the
  // journal policy, which amends nothing. Refcount widths narrow only as
  // far as the run's refcounts fit (snapshots add a reference per
  // snapshot, packed compressed clusters one per user); a downgrade only
  // where compat=0.10 can hold the image (no snapshots, bitmaps, data
  // file, extended L2 or zstd; no backing file with shrinks, which v2
  // cannot express; not under the lazy policy).
  Rng amend_rng(seed ^ 0x616d656e642d6f70ull);
  const bool amend = policy != engine::OrderingPolicy::kJournal && amend_rng.OneIn(4);
  if (amend) c.features += std::string(c.features.empty() ? "" : ",") + "amend";
  const bool can_downgrade = !s.snapshots && !s.bitmaps && w.image.data_file.empty() &&
                             !w.image.extended_l2 &&
                             w.image.compression_type == engine::CompressionType::kZlib &&
                             !(s.backing && s.resize) && policy != engine::OrderingPolicy::kLazy;
  const uint32_t min_refcount_bits = s.snapshots ? 16 : s.compressed ? 8 : 1;
  uint32_t amend_version = w.image.version;
  uint32_t amend_bits = w.image.version == 2 ? 16 : 1u << w.image.refcount_order;
  bool amend_lazy = w.image.lazy_refcounts || policy == engine::OrderingPolicy::kLazy;
  auto add_amend = [&] {
    GuestOp op{OpKind::kAmend, 0, 0, false};
    const uint64_t roll = amend_rng.Below(4);
    if (amend_version == 2) {
      op.amend.version = amend_version = 3;
    } else if (roll == 0 && can_downgrade) {
      if (amend_bits != 16) op.amend.refcount_bits = amend_bits = 16;
      if (amend_lazy) op.amend.lazy_refcounts = amend_lazy = false;
      op.amend.version = amend_version = 2;
    } else if (roll == 1 && policy != engine::OrderingPolicy::kLazy) {
      op.amend.lazy_refcounts = amend_lazy = !amend_lazy;
    } else {
      uint32_t bits = amend_bits;
      while (bits == amend_bits) bits = amend_rng.Pick<uint32_t>({1, 2, 4, 8, 16, 32, 64});
      // Clamped to what the run's refcounts need (then maybe unchanged).
      op.amend.refcount_bits = amend_bits = std::max(bits, min_refcount_bits);
    }
    w.ops.push_back(op);
  };
  // Commits (qemu-img commit, -d now and then) into the backing file, from
  // a stream of their own: the backing file becomes the log's second
  // device (sim M12), and other seeds' cases stay as they were.
  Rng commit_rng(seed ^ 0x636f6d6d69742121ull);
  // Guest clusters a write or zero write touched: they may have a host
  // cluster (kept conservatively: discards and shrinks do not remove them).
  std::set<uint64_t> touched;
  std::vector<std::pair<uint64_t, bool>> live_bitmaps;  // number, enabled
  uint64_t next_bitmap = 0;
  auto add_bitmap = [&] {
    const uint64_t granularity = bitmap_rng.Pick<uint64_t>({0, 512, 4096, 65536, 1 << 20});
    w.ops.push_back({OpKind::kBitmapAdd, next_bitmap, granularity, false});
    live_bitmaps.push_back({next_bitmap++, true});
  };
  if (s.bitmaps) {
    add_bitmap();
    w.ops.push_back({OpKind::kClose, 0, 0, false});
  }
  // Reverts from a third stream, so that the creates and deletes stay
  // where they were. A revert applies the newest snapshot: the disk takes
  // its size, and the ranges written since may lie past that end.
  Rng revert_rng(seed ^ 0x726576657274ull);
  std::deque<uint64_t> snapshot_sizes;  // the live snapshots' disk sizes, oldest first
  // Safe rebases from a stream of their own, over a backing file: onto the
  // second backing file, back onto the first, or onto none (a flatten).
  // Not with internal snapshots, which read through the backing file too
  // (a rebase would change what they hold, as with qemu-img).
  Rng rebase_rng(seed ^ 0x7265626173652121ull);
  const bool rebases = s.backing && !s.snapshots && rebase_rng.OneIn(3);
  if (rebases) c.features += ",rebase";
  // After a flatten the image has no backing file: no commit, no rebase
  // (their draws still happen, so the streams stay where they were).
  bool flattened = false;
  for (size_t i = 0; i < count; ++i) {
    if (rebases && rebase_rng.OneIn(8)) {
      const uint64_t target = rebase_rng.Below(3);
      if (!flattened) w.ops.push_back({OpKind::kRebase, target, 0, false});
      flattened = flattened || target == 0;  // RebaseTarget: 0 is none
      // Its copies may allocate any cluster the backing files cover.
      for (uint64_t gc = 0; gc * cluster < std::min(size, w.image.size_bytes); ++gc)
        touched.insert(gc);
    }
    if (s.bitmaps && bitmap_rng.OneIn(4)) {
      const uint64_t roll = bitmap_rng.Below(8);
      if (live_bitmaps.empty() || (roll == 0 && live_bitmaps.size() < 4)) {
        add_bitmap();
      } else {
        auto& [number, enabled] = live_bitmaps[bitmap_rng.Below(live_bitmaps.size())];
        if (roll <= 2) {
          w.ops.push_back({OpKind::kBitmapClear, number, 0, false});
        } else if (roll <= 5) {
          w.ops.push_back(
              {enabled ? OpKind::kBitmapDisable : OpKind::kBitmapEnable, number, 0, false});
          enabled = !enabled;
        } else {
          w.ops.push_back({OpKind::kBitmapRemove, number, 0, false});
          std::erase_if(live_bitmaps, [n = number](const auto& b) { return b.first == n; });
        }
      }
    }
    if (s.snapshots && snap_rng.OneIn(6)) {
      w.ops.push_back({OpKind::kSnapshotCreate, 0, 0, false});
      snapshot_sizes.push_back(size);
    } else if (s.snapshots && !snapshot_sizes.empty() && snap_rng.OneIn(8)) {
      w.ops.push_back({OpKind::kSnapshotDelete, 0, 0, false});
      snapshot_sizes.pop_front();
    } else if (s.snapshots && !snapshot_sizes.empty() && revert_rng.OneIn(8)) {
      w.ops.push_back({OpKind::kSnapshotRevert, 0, 0, false});
      if (snapshot_sizes.back() < size) written.clear();
      size = snapshot_sizes.back();
    }
    if (amend && amend_rng.OneIn(8)) add_amend();
    if (s.backing && commit_rng.OneIn(8)) {
      GuestOp commit{OpKind::kCommit, 0, 0, false};
      commit.keep = commit_rng.OneIn(4);
      if (!flattened) w.ops.push_back(commit);
    }
    GuestOp op;
    const uint64_t roll = r.Below(20);
    if (s.reopen && i > 0 && i + 1 < count && r.OneIn(10)) {
      // A close (with or without a flush first), and the next operation
      // opens the image again: the first change of a new session sets the
      // lazy dirty bit again, and the allocator starts from what open reads.
      if (r.OneIn(2)) w.ops.push_back({OpKind::kFlush, 0, 0, false});
      op.kind = OpKind::kClose;
    } else if (s.flush && roll < 3) {
      op.kind = OpKind::kFlush;
    } else if (s.resize && roll == 3 && size > cluster && can_shrink && shrink_rng.OneIn(3)) {
      // A shrink to any sector, often inside a cluster: the tail is
      // dropped, and a later growth must read zeroes there.
      size = std::max<uint64_t>(
          kGuestSectorBytes,
          (1 + shrink_rng.Below(size / kGuestSectorBytes - 1)) * kGuestSectorBytes);
      op.kind = OpKind::kResize;
      op.length_bytes = size;
      written.clear();
    } else if (s.resize && roll == 3 && size < (uint64_t{64} << 20)) {
      size *= 2;
      op.kind = OpKind::kResize;
      op.length_bytes = size;
    } else if (s.zeroes && roll >= 4 && roll < 6) {
      op.kind = OpKind::kWriteZeroes;
      range(op);
      op.may_unmap = r.OneIn(2);
    } else if (s.discard && roll >= 6 && roll < 8) {
      op.kind = OpKind::kDiscard;
      range(op);
    } else if (s.reads && roll >= 8 && roll < 11) {
      // Checked as it runs (GuestModel): often across cluster boundaries,
      // over what earlier writes, discards and zero writes left.
      op.kind = OpKind::kRead;
      range(op);
    } else {
      op.kind = OpKind::kWrite;
      range(op);
      // The clusters the write touches, whole (the disk's last one may be
      // partial), compressed; only where no earlier operation may have
      // given a cluster a host cluster (a compressed write fills only
      // clusters without one, as QEMU's).
      const uint64_t first_cluster = op.offset_bytes / cluster;
      const uint64_t end_cluster = (op.offset_bytes + op.length_bytes + cluster - 1) / cluster;
      const auto next_touched = touched.lower_bound(first_cluster);
      const bool untouched = next_touched == touched.end() || *next_touched >= end_cluster;
      if (s.compressed && compress_rng.OneIn(3) && untouched) {
        op.kind = OpKind::kWriteCompressed;
        op.offset_bytes = first_cluster * cluster;
        op.length_bytes = std::min(size, end_cluster * cluster) - op.offset_bytes;
      }
      written.emplace_back(op.offset_bytes, op.length_bytes);
    }
    if (op.kind == OpKind::kWrite || op.kind == OpKind::kWriteZeroes ||
        op.kind == OpKind::kWriteCompressed) {
      for (uint64_t gc = op.offset_bytes / cluster;
           gc * cluster < op.offset_bytes + op.length_bytes; ++gc) {
        touched.insert(gc);
      }
    }
    w.ops.push_back(op);
  }
  if (RecordsBacking(w)) c.features += std::string(c.features.empty() ? "" : ",") + "commit";
  if (s.close_at_end) {
    if (r.OneIn(2)) w.ops.push_back({OpKind::kFlush, 0, 0, false});
    w.ops.push_back({OpKind::kClose, 0, 0, false});
  }
  return c;
}

bool ParseRandomSpec(const std::string& spec, uint64_t& seed, size_t& ops) {
  if (spec.empty()) return false;
  char* end = nullptr;
  seed = std::strtoull(spec.c_str(), &end, 10);
  if (end == spec.c_str() || spec[0] == '-') return false;
  ops = 0;
  if (*end == '\0') return true;
  if (*end != ':' || end[1] == '\0' || end[1] == '-') return false;
  const char* ops_text = end + 1;
  ops = std::strtoull(ops_text, &end, 10);
  return *end == '\0' && ops >= 1 && ops <= 10000;
}

}  // namespace qcrash::properties
