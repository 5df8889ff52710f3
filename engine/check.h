// Check and repair of a qcow2 image, on a par with `qemu-img check -r`.
//
// CheckImage works directly on a BlockDevice (header decode + format codecs),
// not through engine::Image, because Image::Open calls it to rebuild
// refcounts after a crash under lazy refcounts.
//
// One pass rebuilds the reference counts in memory from every owner (header,
// active and snapshot L1/L2 tables, data and compressed clusters, refcount
// table and blocks, snapshot table, bitmap directory and tables) and compares
// them with the refcounts on disk. The counters follow qemu-img check's
// meanings so that both tools classify an image alike:
//   leaks        clusters whose refcount is higher than their references
//   corruptions  refcount lower than references (dangling, shared), wrong
//                OFLAG_COPIED, reserved bits, misaligned or out-of-file
//                entries, broken refcount structures
//   check_errors the check itself could not read something it needed
//
// Repair (QCOW2-NOTES §11, ordered per §9, see engine/repair.cc):
//   kLeaks  lowers refcounts that are too high; fixes OFLAG_COPIED only when
//           nothing else is wrong.
//   kAll    also drops pointers that cannot be trusted (misaligned, past the
//           end of the file, pointing into metadata, the journal area
//           included) before any reference is counted, so none of them can
//           overflow a narrow refcount; clears reserved bits,
//           raises refcounts that are too low, rebuilds the whole refcount
//           structure when it is broken, fixes OFLAG_COPIED, and clears the
//           dirty and corrupt bits when the image is left without corruption.
// A repair is crash-safe (a crash at any point leaves an image that a second
// repair fixes) and idempotent (a second repair writes nothing).
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/block_device.h"
#include "engine/status.h"

namespace qcrash::engine {

enum class RepairMode : uint8_t { kNone, kLeaks, kAll };

struct CheckOptions {
  RepairMode repair = RepairMode::kNone;
  // Findings kept in CheckReport::findings when nothing is repaired (every
  // one is counted; the rest only add to findings_omitted). Repair keeps up
  // to kMaxFindings whatever this says: it marks its findings fixed.
  size_t max_findings = 10000;
  // Also list every corruption and check error, kept or not, by cluster and
  // kind (CheckReport::corrupt_clusters): a caller comparing two images'
  // corruption must not mistake a finding past the limit for a new one.
  bool list_corrupt_clusters = false;
  // Called with the percent done (0..100, rising) as the walk goes through
  // the L1 tables and the later passes: `qcrash check` prints it for large
  // images. Reporting only; it changes nothing the check does.
  std::function<void(double percent)> progress = nullptr;
};

// What a finding is about.
enum class FindingKind : uint8_t {
  kLeak,                  // refcount > references
  kRefcountTooLow,        // 0 < refcount < references: a shared cluster
  kUnreferencedInUse,     // refcount 0 but referenced: dangling pointer
  kRefcountOverflow,      // more references than the refcount width can hold
  kRefcountUnreadable,    // the refcount block covering the cluster is misaligned
  kCopiedMismatch,        // OFLAG_COPIED differs from (refcount == 1)
  kPastEnd,               // a reference ends one cluster or more past the end of the file
  kMisaligned,            // an L2 table or data cluster offset not cluster aligned
  kReservedBits,          // reserved bits set in an L1, L2 or bitmap table entry
  kOverlap,               // one cluster used by metadata and by something else
  kInvalidRefcountEntry,  // refcount table entry: reserved bits, misaligned, past EOF, count != 1
  kZeroFlagOnV2,          // the zero flag is not defined for version 2 images
  kCompressedInvalid,     // compressed entry with OFLAG_COPIED set (or a subcluster bitmap)
  kSubclusterBitmap,  // extended L2: a subcluster both allocated and zero, or allocated unmapped
  kHeader,            // header or header extension inconsistency
  kSnapshotTable,     // snapshot table entry unusable
  kBitmap,            // bitmap directory or table problem
  kIoError,           // a read failed: the check could not complete
  kLimit,             // a walk limit was reached
};

// How a finding counts in the qemu-img style counters.
enum class Severity : uint8_t {
  kInfo,        // context only (dirty bit set, overlap explaining a refcount error, ...)
  kLeak,        // counts in leaks / leaks_fixed
  kCorruption,  // counts in corruptions / corruptions_fixed
  kCheckError,  // counts in check_errors
};

struct Finding {
  FindingKind kind = FindingKind::kLeak;
  Severity severity = Severity::kInfo;
  bool repaired = false;
  uint64_t host_offset = 0;    // the offset the finding is about (entry target or table)
  uint64_t cluster_index = 0;  // host_offset >> cluster_bits
  std::string owner;           // who references it: "active L1[0] -> L2 0x40000[3] (guest 0x30000)"
  std::string message;         // one line, qemu-img style where qemu has one
};

// A guest range whose mapping repair removed: it now reads as unallocated
// (zeroes, or the backing file).
struct DroppedRange {
  std::string table;  // "active" or "snapshot <id> (<name>)"
  uint64_t guest_offset = 0;
  uint64_t length_bytes = 0;
  std::string reason;
};

struct CheckReport {
  // qemu-img check's counters (BdrvCheckResult + BlockFragInfo). After a
  // repair, leaks/corruptions count what is still wrong.
  uint64_t check_errors = 0;
  uint64_t leaks = 0;
  uint64_t corruptions = 0;
  uint64_t leaks_fixed = 0;
  uint64_t corruptions_fixed = 0;
  uint64_t image_end_offset = 0;
  uint64_t total_clusters = 0;      // clusters of the virtual disk
  uint64_t allocated_clusters = 0;  // active L1 only
  uint64_t fragmented_clusters = 0;
  uint64_t compressed_clusters = 0;

  std::vector<Finding> findings;  // at most kMaxFindings; see findings_omitted
  uint64_t findings_omitted = 0;
  // With CheckOptions::list_corrupt_clusters: (cluster_index, kind) of every
  // finding of severity kCorruption or kCheckError, repaired or not, the
  // ones past kMaxFindings included (16 bytes each, one per distinct pair).
  std::set<std::pair<uint64_t, FindingKind>> corrupt_clusters;
  std::vector<DroppedRange> dropped;  // guest ranges whose data repair dropped
  bool refcounts_rebuilt = false;     // the refcount structure was rebuilt
  bool header_bits_cleared = false;   // dirty / corrupt bits cleared after repair
  uint64_t bytes_written = 0;         // by the repair
};

inline constexpr size_t kMaxFindings = 10000;

// Checks (and with options.repair, repairs) the image on `device`. An error
// Status means the check could not start (unreadable or unsupported header);
// problems found in the image are findings, never errors.
Result<CheckReport> CheckImage(BlockDevice& device, const CheckOptions& options);

const char* FindingKindName(FindingKind kind);
const char* SeverityName(Severity severity);

}  // namespace qcrash::engine
