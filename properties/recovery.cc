// RecoverState: the recovery pipeline and the per-state invariants.
#include "properties/recovery.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "engine/check.h"
#include "engine/endian.h"
#include "engine/image.h"
#include "engine/journal.h"
#include "engine/qcow2_format.h"
#include "properties/recovery_internal.h"
#include "sim/crash_view.h"

namespace qcrash::properties {

const char* VerdictName(Verdict verdict) {
  switch (verdict) {
    case Verdict::kClean:
      return "clean";
    case Verdict::kLeaksOnly:
      return "leaks-only";
    case Verdict::kRepaired:
      return "repaired";
    case Verdict::kStaleDataExposed:
      return "stale-data-exposed";
    case Verdict::kDataLoss:
      return "data-loss";
    case Verdict::kUnrecoverable:
      return "unrecoverable";
  }
  return "?";
}

namespace recovery_internal {

namespace {
// The crash state's external data file while its recovery runs (null: the
// image has none). Every open in this file reads guest data through it; a
// recovery only writes metadata, so a nested crash of it shares this file.
thread_local BlockDevice* state_data_file = nullptr;
}  // namespace

ScopedDataFile::ScopedDataFile(BlockDevice* device) : saved_(state_data_file) {
  state_data_file = device;
}
ScopedDataFile::~ScopedDataFile() { state_data_file = saved_; }

engine::DataFileOpener StateDataFile() {
  if (state_data_file == nullptr) return {};
  return DataFileOpenerFor(*state_data_file);
}

// A crash state's image opened read-only, with the workload's backing file
// and the state's data file: how the content checks read what recovery left.
Result<std::unique_ptr<engine::Image>> OpenStateReadOnly(BlockDevice& view,
                                                         const WorkloadRun& run) {
  engine::OpenOptions open;
  open.read_only = true;
  if (RecordsBacking(run.workload) && state_data_file != nullptr) {
    // M12: the second device is the backing file a commit wrote, as the
    // crash left it (the run's opener would give the initial one).
    BlockDevice* backing = state_data_file;
    open.open_backing = [backing](const std::string&) -> Result<std::unique_ptr<BlockDevice>> {
      return std::unique_ptr<BlockDevice>(std::make_unique<DeviceRef>(*backing));
    };
  } else {
    open.open_data_file = StateDataFile();
    open.open_backing = run.options.open.open_backing;
  }
  return engine::Image::Open(view, open);
}

namespace f = engine::format;

bool IsOverReference(engine::FindingKind kind) {
  return kind == engine::FindingKind::kRefcountTooLow || kind == engine::FindingKind::kOverlap;
}

// Step 1: the raw image's evidence. An image not marked dirty (lazy
// refcounts) must be consistent: corruption there breaks I1 or I2.
void CheckRaw(BlockDevice& view, StateResult& result) {
  auto header = engine::ReadHeader(view);
  auto raw = engine::CheckImage(view, {engine::RepairMode::kNone});
  if (!header.ok() || !raw.ok()) {
    const Status& why = header.ok() ? raw.status() : header.status();
    result.violations.push_back({"I1", "raw crash image unreadable: " + why.ToString()});
    return;
  }
  result.raw_leaks = raw->leaks;
  result.raw_corruptions = raw->corruptions + raw->check_errors;
  for (const engine::Finding& finding : raw->findings) {
    if (result.raw_findings.size() < 20 && finding.severity != engine::Severity::kInfo) {
      result.raw_findings.push_back(std::string(engine::SeverityName(finding.severity)) + " " +
                                    engine::FindingKindName(finding.kind) + " at " +
                                    HexOffset(finding.host_offset) + ": " + finding.message +
                                    (finding.owner.empty() ? "" : " (" + finding.owner + ")"));
    }
  }
  const bool marked_dirty = (header->incompatible_features & ~f::kIncompatCorrupt) != 0;
  result.raw_refcounts_dirty = (header->incompatible_features & f::kIncompatDirty) != 0;
  result.raw_clean = !marked_dirty && result.raw_corruptions == 0 && result.raw_leaks == 0 &&
                     !(header->incompatible_features & f::kIncompatCorrupt);
  if (marked_dirty || result.raw_corruptions == 0) return;
  // Each invariant quotes the first finding that breaks it.
  std::string dangling, shared;
  for (const engine::Finding& finding : raw->findings) {
    if (finding.severity != engine::Severity::kCorruption &&
        finding.severity != engine::Severity::kCheckError)
      continue;
    std::string& first = IsOverReference(finding.kind) ? shared : dangling;
    if (first.empty()) {
      first = std::string(": ") + engine::FindingKindName(finding.kind) + " at " +
              HexOffset(finding.host_offset) + ": " + finding.message +
              (finding.owner.empty() ? "" : " (" + finding.owner + ")");
    }
  }
  if (!dangling.empty())
    result.violations.push_back(
        {"I1", "raw image not marked dirty has a dangling or invalid pointer" + dangling});
  if (!shared.empty())
    result.violations.push_back(
        {"I2", "raw image not marked dirty has an over-referenced cluster" + shared});
}

// I6: journal replay never wrote into a range that a later transaction
// revoked, nor into a cluster that now holds guest data.
void CheckReplay(engine::Image& image, StateResult& result, const std::string& tag) {
  const engine::ReplayReport& replay = image.replay_report();
  if (!replay.replayed) return;
  for (const engine::ReplayedWrite& w : replay.writes) {
    for (const engine::ReplayedWrite& revoke : replay.revokes) {
      if (static_cast<int32_t>(revoke.seq - w.seq) > 0 &&
          w.offset_bytes < revoke.offset_bytes + revoke.length_bytes &&
          revoke.offset_bytes < w.offset_bytes + w.length_bytes) {
        result.violations.push_back({tag.empty() ? "I6" : tag,
                                     "journal replay of transaction " + std::to_string(w.seq) +
                                         " wrote " + HexOffset(w.offset_bytes) +
                                         ", revoked by transaction " + std::to_string(revoke.seq)});
        return;
      }
    }
  }
  auto map = image.Map();
  // An image that cannot be mapped has a corrupt L1 or L2 entry, which
  // CheckReplayedConsistent reports (I1 after replay).
  if (!map.ok()) return;
  for (const engine::MapExtent& e : *map) {
    if (!e.data || !e.has_offset || e.depth != 0) continue;
    for (const engine::ReplayedWrite& w : replay.writes) {
      if (w.offset_bytes < e.offset + e.length && e.offset < w.offset_bytes + w.length_bytes) {
        result.violations.push_back(
            {tag.empty() ? "I6" : tag, "journal replay of transaction " + std::to_string(w.seq) +
                                           " wrote " + std::to_string(w.length_bytes) +
                                           " bytes at " + HexOffset(w.offset_bytes) +
                                           ", inside the guest data of " + HexOffset(e.start)});
        return;
      }
    }
  }
}

// The corruption a check found, per cluster and kind: a crash of recovery
// may leave a cluster corrupt that was corrupt before, but not corrupt in a
// new way (a refcount lowered under a pointer repair had not yet removed).
// With it, the raw header's incompatible bits where recovery started: a
// crash of recovery may not leave the corrupt or dirty bit cleared while
// what the bit warned about is still there.
struct CorruptionSet {
  using Key = std::pair<uint64_t, engine::FindingKind>;
  std::set<Key> findings;
  uint64_t incompatible = 0;
  void insert(const Key& key) { findings.insert(key); }
  size_t count(const Key& key) const { return findings.count(key); }
  bool empty() const { return findings.empty(); }
  auto begin() const { return findings.begin(); }
  auto end() const { return findings.end(); }
  // Every corruption and check error of a report made with ListingCorruption.
  void InsertAll(const engine::CheckReport& report) {
    findings.insert(report.corrupt_clusters.begin(), report.corrupt_clusters.end());
  }
};

// Check options that list every corruption by cluster and kind, the ones
// past the report's limit on kept findings included.
engine::CheckOptions ListingCorruption(engine::RepairMode repair) {
  engine::CheckOptions options;
  options.repair = repair;
  options.list_corrupt_clusters = true;
  return options;
}

// The incompatible feature bits of a raw image (0 for version 2 or an
// unreadable header).
uint64_t RawIncompatibleBits(BlockDevice& view) {
  uint8_t header[80];
  if (view.SizeBytes() < sizeof(header) || !view.Read(0, header).ok()) return 0;
  if (LoadBe32(&header[engine::format::kOffVersion]) < 3) return 0;
  return LoadBe64(&header[engine::format::kOffIncompatibleFeatures]);
}

bool IsCorruption(const engine::Finding& finding) {
  return finding.severity == engine::Severity::kCorruption ||
         finding.severity == engine::Severity::kCheckError;
}

// I1 and I2 after journal replay: a journal-dirty raw image is exempt from
// CheckRaw (its metadata is the journal's to complete), but once the recovery
// open has replayed it, it must be as consistent as a raw image not marked
// dirty: leaks allowed, nothing dangling or shared. `repair` is the first
// `check -r all` after that open; its findings are what it found before it
// fixed anything. (The journal policy never sets the lazy-refcounts dirty
// bit, so a replayed image has no rebuild to excuse it.)
void CheckReplayedConsistent(const engine::CheckReport& repair, StateResult& result,
                             const std::string& tag) {
  bool dangling = false, shared = false;
  std::string first;
  for (const engine::Finding& finding : repair.findings) {
    if (!IsCorruption(finding)) continue;
    (IsOverReference(finding.kind) ? shared : dangling) = true;
    if (first.empty()) {
      first = ": " + std::string(engine::FindingKindName(finding.kind)) + " at " +
              HexOffset(finding.host_offset) + ": " + finding.message;
    }
  }
  if (dangling)
    result.violations.push_back(
        {tag.empty() ? "I1" : tag,
         "image after journal replay has a dangling or invalid pointer" + first});
  if (shared)
    result.violations.push_back(
        {tag.empty() ? "I2" : tag, "image after journal replay has an over-referenced cluster" +
                                       (dangling ? std::string() : first)});
}

// Steps 2-4. Returns false when the image could not be recovered. A raw
// image that checked clean, is not marked dirty, and that the recovery open
// did not write to needs no repair: its check already is the proof.
// `started_from` (when given) receives the corruption repair found, by cluster and kind:
// the state repair started from, as a plain open + check sees it.
bool Repair(BlockDevice& view, StateResult& result, const std::string& tag, bool raw_clean,
            CorruptionSet* started_from) {
  engine::OpenOptions open;  // recovery uses the default (ordered) engine
  open.open_data_file = StateDataFile();
  open.policy = engine::OrderingPolicy::kOrdered;
  if (started_from != nullptr) started_from->incompatible = RawIncompatibleBits(view);
  bool wrote = true;
  bool replayed = false;
  {
    auto image = engine::Image::Open(view, open);
    if (!image.ok()) {
      result.violations.push_back(
          {tag.empty() ? "I7" : tag, "open failed: " + image.status().ToString()});
      return false;
    }
    CheckReplay(**image, result, tag);
    replayed = (*image)->replay_report().replayed;
    Status closed = (*image)->Close();
    if (!closed.ok()) {
      result.violations.push_back(
          {tag.empty() ? "I7" : tag, "close after open failed: " + closed.ToString()});
      return false;
    }
    wrote = (*image)->stats().metadata_writes + (*image)->stats().data_writes != 0;
  }
  if (raw_clean && !wrote) return true;
  if (started_from != nullptr) {
    // What a plain check sees in the image repair starts from (repair's own
    // report names what it fixes, not every finding a check would show).
    // Every corruption, not only the findings the report keeps: a junk L2
    // table of 64 KiB clusters alone gives over kMaxFindings, and the
    // refcount findings come after the walk's.
    auto before = engine::CheckImage(view, ListingCorruption(engine::RepairMode::kNone));
    if (before.ok()) started_from->InsertAll(*before);
  }
  auto repaired = engine::CheckImage(view, ListingCorruption(engine::RepairMode::kAll));
  if (!repaired.ok()) {
    result.violations.push_back(
        {tag.empty() ? "I7" : tag, "repair failed: " + repaired.status().ToString()});
    return false;
  }
  if (started_from != nullptr) started_from->InsertAll(*repaired);
  if (replayed) CheckReplayedConsistent(*repaired, result, tag);
  // A second repair must find nothing and write nothing (I7, I3).
  auto again = engine::CheckImage(view, {engine::RepairMode::kAll});
  if (!again.ok() || again->corruptions || again->check_errors) {
    result.violations.push_back({tag.empty() ? "I7" : tag, "image still corrupt after repair"});
    return false;
  }
  if (again->leaks) {
    result.violations.push_back(
        {tag.empty() ? "I3" : tag, std::to_string(again->leaks) + " leaks left after repair"});
  }
  if (again->bytes_written != 0) {
    result.violations.push_back(
        {tag.empty() ? "I7" : tag,
         "a second repair wrote " + std::to_string(again->bytes_written) + " bytes"});
  }
  return true;
}

// Reads guest bytes for the content checks. A compressed cluster whose
// stream a crash left undecodable is a read error to a guest; here it reads
// as garbage, so that the content check judges it as it judges a torn data
// cluster: lost data (a violation under the safe policies, the data-loss
// verdict where the pass allows loss). Any other read failure is returned.
Status ReadGuest(engine::Image& image, uint64_t offset, std::span<uint8_t> out) {
  const Status whole = image.Read(offset, out);
  if (whole.ok()) return whole;
  QCRASH_ASSIGN_OR_RETURN(const std::vector<engine::MapExtent> map, image.Map());
  const uint64_t cluster_bytes = image.header().cluster_bytes();
  for (uint64_t done = 0; done < out.size();) {
    const uint64_t at = offset + done;
    const uint64_t n = std::min<uint64_t>(out.size() - done, cluster_bytes - at % cluster_bytes);
    const std::span<uint8_t> part = out.subspan(done, n);
    if (Status one = image.Read(at, part); !one.ok()) {
      const bool compressed = std::any_of(map.begin(), map.end(), [at](const engine::MapExtent& e) {
        return e.compressed && at >= e.start && at < e.start + e.length;
      });
      if (!compressed) return one;
      // Bytes no sector tag matches (SectorTagOf: garbage).
      for (size_t i = 0; i < part.size(); ++i) part[i] = static_cast<uint8_t>(i * 131 + 7);
    }
    done += n;
  }
  return Status::Ok();
}

// Step 5 beyond the touched clusters: a guest range no operation touched
// must read zeroes (I4: its value since create). Reads `from`..`to` and
// hands it to the oracle only when it is not all zeroes.
Status CheckZeroes(engine::Image& image, const GuestOracle& oracle, uint64_t point, uint64_t from,
                   uint64_t to, std::vector<ContentViolation>& content) {
  std::vector<uint8_t> buffer;
  for (uint64_t at = from; at < to;) {
    // At most 1 MiB a read: a preallocated disk may map all of itself.
    const uint64_t stop = std::min(to, at + (uint64_t{1} << 20));
    buffer.resize(stop - at);
    QCRASH_RETURN_IF_ERROR(ReadGuest(image, at, buffer));
    if (!std::all_of(buffer.begin(), buffer.end(), [](uint8_t b) { return b == 0; }))
      oracle.Check(point, at, buffer, content);
    at = stop;
  }
  return Status::Ok();
}

// Every other range the image maps to host data: a pointer the refcount
// rebuild accepted at a guest offset nobody wrote. Walks the whole mapping
// (Map costs a lookup per guest cluster), so it runs only where no check
// has accounted for every pointer with a refcount: a raw image with the
// lazy-refcounts dirty bit (open rebuilds refcounts from whatever pointers
// it finds) that did not check consistent as it was, and a crash of
// recovery itself (I8). Any other raw image was checked for I1/I2 as it is,
// or, journal-dirty, once replayed.
Status CheckMappedUntouched(engine::Image& image, const GuestOracle& oracle, uint64_t point,
                            std::vector<ContentViolation>& content) {
  QCRASH_ASSIGN_OR_RETURN(std::vector<engine::MapExtent> map, image.Map());
  const auto& touched = oracle.touched_ranges();  // sorted, merged
  auto range = touched.begin();
  for (const engine::MapExtent& e : map) {
    if (!e.data) continue;
    const uint64_t end = std::min(e.start + e.length, image.size_bytes());
    for (uint64_t at = e.start; at < end;) {
      while (range != touched.end() && range->first + range->second <= at) ++range;
      if (range != touched.end() && range->first <= at) {
        at = range->first + range->second;  // touched: read against the oracle already
        continue;
      }
      const uint64_t stop = range == touched.end() ? end : std::min(end, range->first);
      QCRASH_RETURN_IF_ERROR(CheckZeroes(image, oracle, point, at, stop, content));
      at = stop;
    }
  }
  return Status::Ok();
}

// Whether every mapped range nobody wrote reads zeroes after a full
// recovery (false also when the image cannot be opened or read).
bool UntouchedReadZeroes(BlockDevice& view, const WorkloadRun& run, const GuestOracle& oracle,
                         uint64_t point) {
  auto image = OpenStateReadOnly(view, run);
  if (!image.ok()) return false;
  std::vector<ContentViolation> content;
  return CheckMappedUntouched(**image, oracle, point, content).ok() && content.empty();
}

void AddContentViolations(const WorkloadRun& run, const std::vector<ContentViolation>& content,
                          StateResult& result, const std::string& tag) {
  for (const ContentViolation& v : content) {
    const bool stale =
        v.invariant == "I5" && run.options.open.data_ordering == engine::DataOrdering::kQemu;
    if (stale && tag.empty()) {
      if (result.verdict != Verdict::kDataLoss) result.verdict = Verdict::kStaleDataExposed;
      continue;
    }
    result.violations.push_back({tag.empty() ? v.invariant : tag, v.message});
  }
}

namespace {

// Hands the oracle the sectors of `bytes` (read at guest `offset`) outside
// the sorted guest ranges `skip`.
void CheckOutside(const GuestOracle& oracle, uint64_t point, uint64_t offset,
                  std::span<const uint8_t> bytes, const GuestRanges& skip,
                  std::vector<ContentViolation>& content) {
  const uint64_t end = offset + bytes.size();
  auto range = std::lower_bound(skip.begin(), skip.end(), std::pair<uint64_t, uint64_t>{offset, 0});
  if (range != skip.begin() && std::prev(range)->second > offset) --range;
  for (uint64_t at = offset; at < end;) {
    while (range != skip.end() && range->second <= at) ++range;
    const uint64_t stop = range == skip.end() ? end : std::min(end, std::max(at, range->first));
    if (stop > at) oracle.Check(point, at, bytes.subspan(at - offset, stop - at), content);
    if (range == skip.end()) break;
    at = std::max(stop, std::min(end, range->second));
  }
}

}  // namespace

// Step 5, and I10.
void CheckContent(BlockDevice& view, const WorkloadRun& run, const GuestOracle& oracle,
                  uint64_t point, StateResult& result, const std::string& tag,
                  const GuestRanges* skip) {
  auto image = OpenStateReadOnly(view, run);
  if (!image.ok()) {
    result.violations.push_back(
        {tag.empty() ? "I7" : tag, "repaired image does not open: " + image.status().ToString()});
    return;
  }
  if (run.structural_only) return;  // no workload: no guest data to hold it to
  const uint64_t size = (*image)->size_bytes();
  const std::vector<uint64_t> sizes = oracle.SizesAt(point);
  if (std::find(sizes.begin(), sizes.end(), size) == sizes.end()) {
    result.violations.push_back(
        {tag.empty() ? "I4" : tag, "the disk is " + std::to_string(size) +
                                       " bytes: an acknowledged resize to " +
                                       std::to_string(sizes.front()) + " bytes was lost"});
  }
  std::vector<ContentViolation> content;
  std::vector<uint8_t> buffer;
  for (const auto& [offset, length] : oracle.touched_ranges()) {
    if (offset >= size) continue;
    buffer.resize(std::min(length, size - offset));
    Status read = ReadGuest(**image, offset, buffer);
    if (!read.ok()) {
      result.violations.push_back(
          {tag.empty() ? "I7" : tag, "guest read failed: " + read.ToString()});
      return;
    }
    if (skip == nullptr) {
      oracle.Check(point, offset, buffer, content);
    } else {
      CheckOutside(oracle, point, offset, buffer, *skip, content);
    }
  }
  const bool whole_map =
      (result.raw_refcounts_dirty && result.raw_corruptions != 0) || !tag.empty();
  const Status untouched =
      whole_map ? CheckMappedUntouched(**image, oracle, point, content) : Status::Ok();
  if (!untouched.ok()) {
    result.violations.push_back(
        {tag.empty() ? "I7" : tag, "guest read failed: " + untouched.ToString()});
    return;
  }
  AddContentViolations(run, content, result, tag);
  if (!run.reserved_host_offsets.empty()) {
    auto hosts = HostOffsets(**image);
    for (size_t c = 0; hosts.ok() && c < run.reserved_host_offsets.size() && c < hosts->size();
         ++c) {
      if (run.reserved_host_offsets[c] != 0 && (*hosts)[c] != 0 &&
          (*hosts)[c] != run.reserved_host_offsets[c]) {
        result.violations.push_back(
            {tag.empty() ? "I10" : tag,
             "guest cluster " + std::to_string(c) + " moved from its reserved host cluster " +
                 HexOffset(run.reserved_host_offsets[c]) + " to " + HexOffset((*hosts)[c])});
        break;
      }
    }
  }
}

// I12: a snapshot whose create returned exists (until a delete of it
// returns), and every snapshot there reads exactly what the guest saw when
// it was taken (the touched clusters, against the model kept at its create).
void CheckSnapshots(BlockDevice& view, const WorkloadRun& run, const GuestOracle& oracle,
                    uint64_t point, StateResult& result) {
  if (run.snapshot_models.empty()) return;
  auto image = OpenStateReadOnly(view, run);
  if (!image.ok()) return;  // CheckContent reported it
  auto listed = (*image)->Snapshots();
  if (!listed.ok()) {
    result.violations.push_back(
        {"I12", "snapshot table unreadable: " + listed.status().ToString()});
    return;
  }
  std::map<std::string, uint64_t> names;  // each snapshot's disk size
  for (const engine::SnapshotEntry& s : *listed)
    names[s.name] = s.disk_size.value_or((*image)->size_bytes());
  for (const auto& [create_op, model] : run.snapshot_models) {
    const std::string name = "s" + std::to_string(create_op + 1);
    const bool created = create_op < run.spans.size() && run.spans[create_op].end <= point;
    bool deleted = false, deleting = false;
    for (const auto& [delete_op, target] : run.snapshot_deleted_by) {
      if (target != create_op || delete_op >= run.spans.size()) continue;
      deleted |= run.spans[delete_op].end <= point;
      deleting |= run.spans[delete_op].start <= point && point < run.spans[delete_op].end;
    }
    const bool present = names.count(name) != 0;
    if (created && !deleted && !deleting && !present) {
      result.violations.push_back(
          {"I12", "snapshot " + name + " is gone, though its create returned"});
      continue;
    }
    if (deleted && present) {
      result.violations.push_back(
          {"I12", "snapshot " + name + " is back, though its delete returned"});
      continue;
    }
    if (!present) continue;
    std::vector<uint8_t> buffer;
    // As large as the disk was at the create (a revert or resize since
    // may have changed the active size).
    const uint64_t snapshot_bytes = names.at(name);
    for (const auto& [offset, length] : oracle.touched_ranges()) {
      if (offset >= snapshot_bytes) continue;
      buffer.resize(std::min(length, snapshot_bytes - offset));
      Status read = (*image)->ReadSnapshot(name, offset, buffer);
      if (read.ok()) read = model.CheckRead(offset, buffer);
      if (!read.ok()) {
        result.violations.push_back({"I12", "snapshot " + name + ": " + read.ToString()});
        break;
      }
    }
  }
}

// I11: a bitmap the recovered image has without in_use marks every
// granule that shows data written since the bitmap was empty (its add or
// its last clear), except where it was disabled. Written data is known by
// its tag (op number and sector in every 8-byte word), so a granule that
// reads differently only because an earlier unflushed write was lost is
// not held against the bitmap (zeroes name no operation, so zero writes
// and discards are not checked). Which epoch of a bitmap the disk holds
// is not known (a clear is stored only at a close): the bitmap passes if
// it is sound for one epoch begun by the crash point.
namespace {

// The first 8-byte word of `bytes` (at guest offset `offset`) that a
// write with operation index > `after` wrote whole, as its guest offset;
// npos if none. A word that byte-granular writes left mixed can decode to
// any op number: only a write that covers the word counts.
uint64_t FirstWordWrittenAfter(std::span<const uint8_t> bytes, uint64_t offset, size_t after,
                               const std::vector<GuestOp>& ops) {
  for (uint64_t at = (8 - offset % 8) % 8; at + 8 <= bytes.size(); at += 8) {
    uint64_t word;
    std::memcpy(&word, &bytes[at], 8);
    const uint64_t op_number = word >> 40;
    const uint64_t sector = (offset + at) / kGuestSectorBytes;
    if (op_number <= after + 1 || op_number > ops.size() || word != SectorTag(op_number, sector))
      continue;
    const GuestOp& op = ops[op_number - 1];
    if (WritesData(op.kind) && op.offset_bytes <= offset + at &&
        offset + at + 8 <= op.offset_bytes + op.length_bytes)
      return offset + at;
  }
  return UINT64_MAX;
}

// The first whole sector of `bytes` (at guest offset `offset`, sector
// aligned) that reads zeroes where the epoch's baseline holds data made
// durable before the epoch began (a flush or close between its write and
// the epoch's operation): only a zero write or discard since can have
// zeroed it (or a data loss, which I4 reports). npos if none.
uint64_t FirstZeroedAfter(std::span<const uint8_t> bytes, uint64_t offset,
                          const WorkloadRun::BitmapEpoch& epoch, const std::vector<GuestOp>& ops) {
  for (uint64_t at = (kGuestSectorBytes - offset % kGuestSectorBytes) % kGuestSectorBytes;
       at + kGuestSectorBytes <= bytes.size(); at += kGuestSectorBytes) {
    if (std::any_of(bytes.begin() + at, bytes.begin() + at + kGuestSectorBytes,
                    [](uint8_t b) { return b != 0; }))
      continue;
    const std::optional<uint64_t> tag = epoch.baseline.WholeTag((offset + at) / kGuestSectorBytes);
    if (!tag || *tag == 0) continue;
    const uint64_t writer = *tag >> 40;  // op number; the backing file's is durable from the start
    bool durable = writer == kBackingOpNumber;
    for (size_t f = writer; !durable && f < epoch.op && f < ops.size(); ++f)
      durable = ops[f].kind == OpKind::kFlush || ops[f].kind == OpKind::kClose;
    if (durable) return offset + at;
  }
  return UINT64_MAX;
}

}  // namespace

void CheckBitmaps(BlockDevice& view, const WorkloadRun& run, const GuestOracle& oracle,
                  uint64_t point, StateResult& result) {
  if (run.bitmap_epochs.empty()) return;
  auto image = OpenStateReadOnly(view, run);
  if (!image.ok()) return;  // CheckContent reported it
  auto listed = (*image)->Bitmaps();
  if (!listed.ok()) {
    result.violations.push_back(
        {"I11", "bitmap directory unreadable: " + listed.status().ToString()});
    return;
  }
  const uint64_t size = (*image)->size_bytes();
  // The touched ranges as the recovered image reads them.
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> ranges;
  for (const auto& [offset, length] : oracle.touched_ranges()) {
    if (offset >= size) continue;
    std::vector<uint8_t> bytes(std::min(length, size - offset));
    if (!(*image)->Read(offset, bytes).ok()) return;  // CheckContent reported it
    ranges.push_back({offset, std::move(bytes)});
  }
  for (const engine::BitmapEntry& entry : *listed) {
    if (entry.flags & engine::kBitmapInUse) continue;  // inconsistent: nobody trusts it
    auto content = (*image)->ReadBitmap(entry.name);
    if (!content.ok()) {
      result.violations.push_back(
          {"I11", "bitmap " + entry.name + " unreadable: " + content.status().ToString()});
      continue;
    }
    const uint64_t granule = uint64_t{1} << entry.granularity_bits;
    std::string miss;  // the first epoch's first unmarked granule
    bool sound = false, any = false;
    for (const WorkloadRun::BitmapEpoch& epoch : run.bitmap_epochs) {
      if ("b" + std::to_string(epoch.number) != entry.name || epoch.op >= run.spans.size() ||
          run.spans[epoch.op].start > point)
        continue;
      any = true;
      std::string first_miss;
      for (const auto& [offset, bytes] : ranges) {
        const uint64_t end = offset + bytes.size();
        for (uint64_t at = offset; at < end && first_miss.empty();) {
          const uint64_t next = std::min(end, (at / granule + 1) * granule);
          const bool untracked =
              std::any_of(epoch.untracked.begin(), epoch.untracked.end(),
                          [&](const auto& r) { return r.first < next && at < r.second; });
          if (!content->Marked(at) && !untracked) {
            const std::span<const uint8_t> piece =
                std::span<const uint8_t>(bytes).subspan(at - offset, next - at);
            const uint64_t word = FirstWordWrittenAfter(piece, at, epoch.op, run.workload.ops);
            const uint64_t zeroed = FirstZeroedAfter(piece, at, epoch, run.workload.ops);
            if (word == UINT64_MAX && zeroed != UINT64_MAX)
              first_miss = "granule at " + HexOffset(at / granule * granule) + " reads zeroes at " +
                           HexOffset(zeroed) + " where data durable before operation " +
                           std::to_string(epoch.op) + " was, but is not marked";
            if (word != UINT64_MAX) {
              uint64_t tag;
              std::memcpy(&tag, &bytes[word - offset], 8);
              first_miss = "granule at " + HexOffset(at / granule * granule) + " holds " +
                           DescribeSectorTag(tag) + " (at " + HexOffset(word) +
                           "), written after operation " + std::to_string(epoch.op) +
                           ", but is not marked";
            }
          }
          at = next;
        }
        if (!first_miss.empty()) break;
      }
      if (first_miss.empty()) {
        sound = true;
        break;
      }
      if (miss.empty()) miss = first_miss;
    }
    if (any && !sound)
      result.violations.push_back({"I11", "bitmap " + entry.name + " (not in use): " + miss});
  }
}

// Whether a corruption (cluster, kind) a check of a crashed recovery finds
// is new: not found where recovery started, nor explained by it.
bool NewCorruption(const CorruptionSet& started_from, uint64_t cluster, engine::FindingKind kind) {
  if (started_from.count({cluster, kind})) return false;
  // A refcount block the table placed outside the image before recovery
  // is inside it once recovery grew the file (the rebuild writes there):
  // the same broken entry, now seen as a block of wrong counts.
  if (started_from.count({cluster, engine::FindingKind::kInvalidRefcountEntry})) return false;
  // A cluster whose refcount cannot be read sits under a broken refcount
  // table entry; when one was broken before recovery, the clusters the
  // recovery wrote past the old end of the file (a rebuilt structure not
  // yet switched to) fall under it too. A newly broken entry is reported
  // as an invalid-refcount-entry of its own.
  return kind != engine::FindingKind::kRefcountUnreadable ||
         std::none_of(started_from.begin(), started_from.end(), [](const auto& c) {
           return c.second == engine::FindingKind::kRefcountUnreadable ||
                  c.second == engine::FindingKind::kInvalidRefcountEntry;
         });
}

// "KIND at OFFSET: MESSAGE (OWNER)" from the first kept finding of that
// cluster and kind, or "KIND in cluster N" when the report did not keep it.
std::string DescribeCorruption(const engine::CheckReport& report, uint64_t cluster,
                               engine::FindingKind kind, bool with_owner) {
  const std::string name = engine::FindingKindName(kind);
  for (const engine::Finding& finding : report.findings) {
    if (!IsCorruption(finding) || finding.cluster_index != cluster || finding.kind != kind)
      continue;
    return name + " at " + HexOffset(finding.host_offset) + ": " + finding.message +
           (with_owner && !finding.owner.empty() ? " (" + finding.owner + ")" : "");
  }
  return name + " in cluster " + std::to_string(cluster) + " (a finding past the " +
         std::to_string(report.findings.size()) + " the report kept)";
}

// I8, repair's own ordering: a crash inside the recovery (journal replay,
// the rebuild of a dirty image's refcounts, repair) leaves an image no worse
// than the one recovery started from, as a plain open + read + check sees
// it, without a second repair: no corrupt cluster that was not corrupt
// before, and, when nothing was corrupt, every guest sector allowed.
void CheckNoWorse(BlockDevice& view, const WorkloadRun& run, const GuestOracle& oracle,
                  uint64_t point, const CorruptionSet& started_from, bool content_ok,
                  StateResult& result) {
  // The bits recovery cleared (the open of a dirty image, repair's last step).
  const uint64_t cleared = started_from.incompatible & ~RawIncompatibleBits(view) &
                           (engine::format::kIncompatDirty | engine::format::kIncompatCorrupt);
  engine::OpenOptions open;
  open.open_data_file = StateDataFile();
  open.policy = engine::OrderingPolicy::kOrdered;
  {
    auto image = engine::Image::Open(view, open);
    if (!image.ok()) {
      result.violations.push_back({"I8", "a plain open fails: " + image.status().ToString()});
      return;
    }
    if (Status closed = (*image)->Close(); !closed.ok()) {
      result.violations.push_back({"I8", "a plain open + close fails: " + closed.ToString()});
      return;
    }
  }
  auto checked = engine::CheckImage(view, ListingCorruption(engine::RepairMode::kNone));
  if (!checked.ok()) {
    result.violations.push_back({"I8", "check fails: " + checked.status().ToString()});
    return;
  }
  // A cleared corrupt bit lets writers at metadata still corrupt; a cleared
  // dirty bit stops the open from rebuilding refcounts still wrong.
  if (cleared != 0 && !checked->corrupt_clusters.empty()) {
    const auto& [cluster, kind] = *checked->corrupt_clusters.begin();
    result.violations.push_back(
        {"I8", std::string("worse than before recovery: the ") +
                   ((cleared & engine::format::kIncompatCorrupt) ? "corrupt" : "dirty") +
                   " bit is cleared while " +
                   DescribeCorruption(*checked, cluster, kind, /*with_owner=*/false) + " remains"});
    return;
  }
  // Every corruption counts, the findings past the report's limit included
  // (CheckReport::corrupt_clusters), as the starting set does.
  for (const auto& [cluster, kind] : checked->corrupt_clusters) {
    if (!NewCorruption(started_from, cluster, kind)) continue;
    result.violations.push_back({"I8", "worse than before recovery, without a second repair: " +
                                           DescribeCorruption(*checked, cluster, kind,
                                                              /*with_owner=*/true)});
    return;
  }
  if (started_from.empty() && content_ok) CheckContent(view, run, oracle, point, result, "I8");
}

void CheckNested(sim::CrashView& view, const WorkloadRun& run, const GuestOracle& oracle,
                 uint64_t point, const RecoveryOptions& options, const CorruptionSet& started_from,
                 bool content_ok, StateResult& result) {
  auto timeline = view.NestedTimeline();
  auto spec = sim::ParseEnumeratorSpec(options.nested_enumerator);
  if (!timeline.ok() || !spec.ok()) return;
  auto enumerator = sim::CrashEnumerator::Create(*timeline, *spec);
  sim::CrashState nested;
  for (uint64_t n = 0; n < options.nested_states_max && enumerator->Next(&nested); ++n) {
    auto nested_view = sim::CrashTimeline::BuildView(enumerator->point(), nested);
    if (!nested_view.ok()) continue;
    StateResult inner;
    CheckNoWorse(**nested_view, run, oracle, point, started_from, content_ok, inner);
    if (inner.violations.empty() && Repair(**nested_view, inner, "I8", false) && content_ok)
      CheckContent(**nested_view, run, oracle, point, inner, "I8");
    for (Violation& v : inner.violations) {
      v.message = "crash during recovery at nested state " + sim::FormatCrashStateId(nested) +
                  ": " + v.message;
      result.violations.push_back(std::move(v));
    }
    if (!inner.violations.empty()) return;  // one nested counterexample is enough
  }
}

void SetVerdict(bool repaired, StateResult& result) {
  bool data_loss = false, unrecoverable = !repaired;
  for (const Violation& v : result.violations) {
    data_loss |= v.invariant == "I4" || v.invariant == "I5" || v.invariant == "I6";
    unrecoverable |= v.invariant == "I7";
  }
  if (unrecoverable) {
    result.verdict = Verdict::kUnrecoverable;
  } else if (data_loss) {
    result.verdict = Verdict::kDataLoss;
  } else if (result.verdict != Verdict::kStaleDataExposed) {
    result.verdict = result.raw_corruptions ? Verdict::kRepaired
                     : result.raw_leaks     ? Verdict::kLeaksOnly
                                            : Verdict::kClean;
  }
}

}  // namespace recovery_internal

using namespace recovery_internal;

StateResult RecoverState(const WorkloadRun& run, const GuestOracle& oracle,
                         std::shared_ptr<const sim::CrashPoint> point, const sim::CrashState& state,
                         const RecoveryOptions& options) {
  StateResult result;
  auto view = sim::CrashView::Build(point, state);
  if (!view.ok()) {
    result.verdict = Verdict::kUnrecoverable;
    result.violations.push_back({"I7", "cannot build crash view: " + view.status().ToString()});
    return result;
  }
  // The data file's own crash state (sim/crash_model.h M11).
  std::unique_ptr<sim::CrashView> data_view;
  if (point->second_base) {
    auto built = sim::CrashTimeline::SecondDeviceView(point, state);
    if (!built.ok()) {
      result.verdict = Verdict::kUnrecoverable;
      result.violations.push_back(
          {"I7", "cannot build the data file's crash view: " + built.status().ToString()});
      return result;
    }
    data_view = std::move(built).value();
  }
  const ScopedDataFile data_file(data_view.get());
  CheckRaw(**view, result);
  if (!options.nested_enumerator.empty()) (*view)->StartLog();
  const bool raw_clean = result.raw_clean;
  CorruptionSet started_from;
  const bool nested = !options.nested_enumerator.empty();
  const bool repaired = Repair(**view, result, "", raw_clean, nested ? &started_from : nullptr);
  const size_t before_content = result.violations.size();
  if (repaired) CheckContent(**view, run, oracle, state.point, result, "");
  if (repaired && !run.structural_only) CheckSnapshots(**view, run, oracle, state.point, result);
  if (repaired && !run.structural_only) CheckBitmaps(**view, run, oracle, state.point, result);
  // A guest sector already wrong after a full recovery is not held against
  // a crash inside that recovery.
  bool content_ok = result.violations.size() == before_content;
  // The nested check reads every mapped range, not only the touched ones (a
  // crash of recovery may expose what a pointer maps). From a corrupt image,
  // hold it to no more than the full recovery achieved there: under the
  // unsafe policy a junk L2 table can pass repair with plausible pointers
  // into junk clusters, the first crash's doing, not the nested one's. From
  // a sound image every mapped range must read right after a nested crash.
  if (repaired && nested && content_ok && !started_from.empty() && !run.structural_only)
    content_ok = UntouchedReadZeroes(**view, run, oracle, state.point);
  if (repaired && !options.nested_enumerator.empty()) {
    CheckNested(**view, run, oracle, state.point, options, started_from, content_ok, result);
  }
  SetVerdict(repaired, result);
  if (options.recovery_invariants_only) {
    std::erase_if(result.violations, [](const Violation& v) {
      return v.invariant != "I3" && v.invariant != "I7" && v.invariant != "I8";
    });
  }
  return result;
}

StateResult RecoverImage(BlockDevice& image, const WorkloadRun& run, const GuestOracle& oracle,
                         uint64_t point, BlockDevice* data_file) {
  const ScopedDataFile scoped(data_file);
  StateResult result;
  CheckRaw(image, result);
  const bool repaired = Repair(image, result, "", result.raw_clean);
  if (repaired) CheckContent(image, run, oracle, point, result, "");
  SetVerdict(repaired, result);
  return result;
}

}  // namespace qcrash::properties
