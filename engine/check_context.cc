// The state of one check run: bounded reads, the in-memory refcount table,
// the metadata map, findings, and the on-disk refcount view.
#include <algorithm>
#include <limits>
#include <memory>

#include "engine/check_internal.h"
#include "engine/endian.h"

namespace qcrash::engine::check_internal {
namespace {

namespace f = format;

// Reads what the file holds of [offset, offset + out.size()) and zero-fills
// the rest, as QEMU's block layer does for reads past the end of a file.
// Only the part past the end is zeroed: the read overwrites the rest (this
// runs for every table of every check, and the explorer checks each crash
// state up to three times).
Status ReadZeroFilledFrom(BlockDevice& device, uint64_t offset, std::span<uint8_t> out) {
  const uint64_t size = device.SizeBytes();
  const uint64_t in_file = offset >= size ? 0 : std::min<uint64_t>(out.size(), size - offset);
  std::fill(out.begin() + static_cast<std::ptrdiff_t>(in_file), out.end(), uint8_t{0});
  if (offset >= size) return Status::Ok();
  return device.Read(offset, out.first(in_file));
}

}  // namespace

const char* ClusterUseName(ClusterUse use) {
  switch (use) {
    case ClusterUse::kNone:
      return "none";
    case ClusterUse::kHeader:
      return "qcow2 header";
    case ClusterUse::kActiveL1:
      return "active L1 table";
    case ClusterUse::kSnapshotL1:
      return "snapshot L1 table";
    case ClusterUse::kL2:
      return "L2 table";
    case ClusterUse::kRefcountTable:
      return "refcount table";
    case ClusterUse::kRefcountBlock:
      return "refcount block";
    case ClusterUse::kSnapshotTable:
      return "snapshot table";
    case ClusterUse::kBitmapDirectory:
      return "bitmap directory";
    case ClusterUse::kBitmapTable:
      return "bitmap table";
    case ClusterUse::kJournal:
      return "journal";
  }
  return "?";
}

std::string GuestRange(uint64_t guest_offset) { return "guest " + HexOffset(guest_offset); }

// ---- RefcountView -----------------------------------------------------------------

Status RefcountView::Load(BlockDevice& device, const Header& header) {
  device_ = &device;
  cluster_bits_ = header.cluster_bits;
  refcount_order_ = header.refcount_order;
  entries_per_block_ = f::RefcountBlockEntries(cluster_bits_, refcount_order_);
  // DecodeHeader bounds the table by kMaxRefcountTableBytes (8 MiB). Only
  // the part inside the file is read, and trailing zero entries are dropped:
  // an entry past the end reads as zero, and a missing entry means the same
  // as a zero one to every user of table(). A hostile header naming 8 MiB
  // of table in a 10 KiB file then costs nothing per entry.
  const uint64_t table_bytes = uint64_t{header.refcount_table_clusters} << cluster_bits_;
  const uint64_t file_bytes = device.SizeBytes();
  const uint64_t in_file_bytes =
      header.refcount_table_offset >= file_bytes
          ? 0
          : std::min<uint64_t>(table_bytes, file_bytes - header.refcount_table_offset) &
                ~uint64_t{7};
  // Not zero-initialised: the read fills every byte.
  const auto bytes = std::make_unique_for_overwrite<uint8_t[]>(in_file_bytes);
  QCRASH_RETURN_IF_ERROR(ReadZeroFilledFrom(device, header.refcount_table_offset,
                                            std::span<uint8_t>(bytes.get(), in_file_bytes)));
  // Trailing zero entries are dropped (see above); the table is mostly
  // zeroes, so whole empty runs are skipped first.
  const std::span<const uint8_t> in_file(bytes.get(), in_file_bytes);
  size_t entries = in_file_bytes / 8;
  while (entries >= 8 && NextNonZeroEntry(in_file.subspan((entries - 8) * 8, 64), 0) == 8) {
    entries -= 8;
  }
  while (entries > 0 && LoadBe64(&bytes[(entries - 1) * 8]) == 0) --entries;
  table_.resize(entries);
  for (size_t i = 0; i < entries; ++i) table_[i] = LoadBe64(&bytes[i * 8]);
  blocks_.clear();
  dirty_.clear();
  last_block_ = nullptr;
  return Status::Ok();
}

void RefcountView::Replace(uint64_t table_offset, std::vector<uint64_t> table,
                           std::map<uint64_t, std::vector<uint8_t>> blocks) {
  (void)table_offset;
  table_ = std::move(table);
  blocks_ = std::move(blocks);
  dirty_.clear();
  last_block_ = nullptr;
}

Result<std::vector<uint8_t>*> RefcountView::BlockFor(uint64_t table_index, bool* unreadable) {
  *unreadable = false;
  if (table_index == last_index_ && last_block_ != nullptr) return last_block_;
  if (table_index >= table_.size()) return static_cast<std::vector<uint8_t>*>(nullptr);
  const uint64_t offset = table_[table_index] & f::kRefcountTableOffsetMask;
  if (offset == 0) return static_cast<std::vector<uint8_t>*>(nullptr);
  if ((offset & ((uint64_t{1} << cluster_bits_) - 1)) != 0) {
    *unreadable = true;
    return static_cast<std::vector<uint8_t>*>(nullptr);
  }
  auto it = blocks_.find(table_index);
  if (it == blocks_.end()) {
    std::vector<uint8_t> block(uint64_t{1} << cluster_bits_);
    QCRASH_RETURN_IF_ERROR(ReadZeroFilledFrom(*device_, offset, block));
    it = blocks_.emplace(table_index, std::move(block)).first;
  }
  last_index_ = table_index;
  last_block_ = &it->second;  // std::map nodes are stable
  return &it->second;
}

Result<std::optional<uint64_t>> RefcountView::Get(uint64_t cluster) {
  bool unreadable = false;
  QCRASH_ASSIGN_OR_RETURN(std::vector<uint8_t> * block,
                          BlockFor(cluster / entries_per_block_, &unreadable));
  if (unreadable) return std::optional<uint64_t>();
  if (block == nullptr) return std::optional<uint64_t>(0);
  return std::optional<uint64_t>(
      f::GetRefcount(*block, cluster % entries_per_block_, refcount_order_));
}

Status RefcountView::Set(uint64_t cluster, uint64_t value) {
  bool unreadable = false;
  const uint64_t table_index = cluster / entries_per_block_;
  QCRASH_ASSIGN_OR_RETURN(std::vector<uint8_t> * block, BlockFor(table_index, &unreadable));
  if (block == nullptr) {
    return Status::InvalidArgument("refcount of cluster " + std::to_string(cluster) +
                                   " has no refcount block to hold it");
  }
  f::SetRefcount(*block, cluster % entries_per_block_, refcount_order_, value);
  dirty_[table_index] = true;
  return Status::Ok();
}

std::vector<std::pair<uint64_t, const std::vector<uint8_t>*>> RefcountView::DirtyBlocks() const {
  std::vector<std::pair<uint64_t, const std::vector<uint8_t>*>> out;
  for (const auto& [table_index, unused] : dirty_) {
    out.emplace_back(table_[table_index] & f::kRefcountTableOffsetMask, &blocks_.at(table_index));
  }
  return out;
}

// ---- CheckContext -------------------------------------------------------------------

CheckContext::CheckContext(BlockDevice& dev, const Header& h, const CheckOptions& options)
    : FindingLog(options.repair == RepairMode::kNone ? std::min(options.max_findings, kMaxFindings)
                                                     : kMaxFindings,
                 h.cluster_bits, options.list_corrupt_clusters),
      TableReader(dev),
      ClusterLedger(*this, options.repair == RepairMode::kAll),
      device(dev),
      header(h),
      options_(options) {}

Status CheckContext::Init() {
  file_bytes = device.SizeBytes();
  cluster_bytes = header.cluster_bytes();
  nb_clusters = (file_bytes + cluster_bytes - 1) >> header.cluster_bits;
  if (nb_clusters > kMaxClustersChecked) {
    return Status::Limit("image file of " + std::to_string(file_bytes) +
                         " bytes has more clusters than check's limit of " +
                         std::to_string(kMaxClustersChecked));
  }
  refcount_max = std::min<uint64_t>(f::MaxRefcount(header.refcount_order),
                                    std::numeric_limits<uint32_t>::max());
  SetTableGeometry(file_bytes, cluster_bytes);
  InitLedger(file_bytes, header.cluster_bits, nb_clusters, refcount_max);
  report.total_clusters = (header.size_bytes + cluster_bytes - 1) >> header.cluster_bits;
  return Status::Ok();
}

// ---- TableReader ---------------------------------------------------------------------

Status TableReader::ReadZeroFilled(uint64_t offset, std::span<uint8_t> out) {
  return ReadZeroFilledFrom(table_device_, offset, out);
}

Status TableReader::ReadTable(uint64_t offset, std::span<uint8_t> out) {
  auto it = edited_tables.find(offset);
  if (it != edited_tables.end() && it->second.size() == out.size()) {
    std::copy(it->second.begin(), it->second.end(), out.begin());
    return Status::Ok();
  }
  return ReadZeroFilled(offset, out);
}

Status TableReader::ReadL1(uint64_t offset, uint64_t entries, std::vector<uint8_t>& out) {
  const uint64_t in_file = offset >= table_file_bytes_ ? 0 : (table_file_bytes_ - offset + 7) / 8;
  out.resize(std::min(entries, in_file) * 8);
  return ReadTable(offset, out);
}

std::span<uint8_t> TableReader::L2Scratch() {
  // Not zero-initialised: every user fills it with ReadTable first.
  if (l2_scratch_ == nullptr)
    l2_scratch_ = std::make_unique_for_overwrite<uint8_t[]>(table_cluster_bytes_);
  return std::span<uint8_t>(l2_scratch_.get(), table_cluster_bytes_);
}

void TableReader::EditTable(uint64_t offset, std::span<const uint8_t> bytes) {
  edited_tables[offset].assign(bytes.begin(), bytes.end());
}

// ---- ClusterLedger -------------------------------------------------------------------

void ClusterLedger::InitLedger(uint64_t file_bytes, uint32_t cluster_bits, uint64_t nb_clusters,
                               uint64_t refcount_max) {
  ledger_file_bytes_ = file_bytes;
  ledger_cluster_bits_ = cluster_bits;
  ledger_refcount_max_ = refcount_max;
  // One extra cluster: a reference may end less than a cluster past EOF.
  imrt_.assign(nb_clusters + 1, 0);
  use_.assign(nb_clusters + 1, ClusterUse::kNone);
}

bool ClusterLedger::PastEnd(uint64_t offset, uint64_t size) const {
  // Offsets come from 56-bit fields and sizes are at most a few MiB: no overflow.
  const uint64_t end = offset + size;
  return end > ledger_file_bytes_ &&
         end - ledger_file_bytes_ >= (uint64_t{1} << ledger_cluster_bits_);
}

void ClusterLedger::NotePastEnd(uint64_t offset, uint64_t size) {
  // Only repair rebuilds, and in kAll repair drops every past-end L2
  // pointer first, so this list holds header-level structures only.
  if (keeps_past_end_ranges_) {
    past_end_ranges.push_back(
        {offset >> ledger_cluster_bits_, (offset + size - 1) >> ledger_cluster_bits_, true});
  }
}

void ClusterLedger::SetImrt(uint64_t cluster, uint64_t count) {
  if (cluster >= imrt_.size()) {
    imrt_.resize(cluster + 1, 0);
    use_.resize(cluster + 1, ClusterUse::kNone);
  }
  imrt_[cluster] = static_cast<uint32_t>(std::min(count, ledger_refcount_max_));
}

ClusterUse ClusterLedger::MarkMetadata(uint64_t offset, uint64_t size, ClusterUse use) {
  if (size == 0) return ClusterUse::kNone;
  const uint64_t first = offset >> ledger_cluster_bits_;
  const uint64_t last = (offset + size - 1) >> ledger_cluster_bits_;
  ClusterUse conflict = ClusterUse::kNone;
  for (uint64_t k = first; k <= last && k < use_.size(); ++k) {
    if (use_[k] == ClusterUse::kNone) {
      use_[k] = use;
    } else if (use_[k] != use && conflict == ClusterUse::kNone) {
      conflict = use_[k];
    }
  }
  return conflict;
}

// ---- FindingLog ----------------------------------------------------------------------

bool FindingLog::CountFinding(FindingKind kind, Severity severity, bool repaired) {
  switch (severity) {
    case Severity::kInfo:
      break;
    case Severity::kLeak:
      ++(repaired ? report.leaks_fixed : report.leaks);
      break;
    case Severity::kCorruption:
      ++(repaired ? report.corruptions_fixed : report.corruptions);
      break;
    case Severity::kCheckError:
      ++report.check_errors;
      break;
  }
  if (report.findings.size() >= max_findings_) {
    ++report.findings_omitted;
    if (!repaired && severity != Severity::kInfo) ++omitted_open[{kind, severity}];
    return false;
  }
  return true;
}

void FindingLog::Keep(FindingKind kind, Severity severity, bool repaired, uint64_t host_offset,
                      std::string owner, std::string message) {
  Finding finding;
  finding.kind = kind;
  finding.severity = severity;
  finding.repaired = repaired;
  finding.host_offset = host_offset;
  finding.cluster_index = host_offset >> cluster_bits_;
  finding.owner = std::move(owner);
  finding.message = std::move(message);
  report.findings.push_back(std::move(finding));
}

}  // namespace qcrash::engine::check_internal
