// Image::Impl's journal hooks: find the journal through its header
// extension, replay it on open, create or reset it for the journal policy,
// and keep the journal-dirty (incompatible) and journal-valid (autoclear)
// bits. The decision table is in engine/FORMAT.md "Journal".
#include <algorithm>

#include "engine/endian.h"
#include "engine/image_impl.h"

namespace qcrash::engine {

namespace f = format;
namespace j = journal;

namespace {

const HeaderExtension* FindJournalExtension(const Header& h) {
  for (const HeaderExtension& e : h.unknown_extensions) {
    if (e.type == j::kExtJournal) return &e;
  }
  return nullptr;
}

}  // namespace

JournalOptions Image::Impl::EffectiveJournalOptions() const {
  JournalOptions o = options_.journal;
  if (!rules_.journal_checksums) o.checksums = false;
  o.block_order = std::clamp<uint32_t>(o.block_order, j::kMinBlockOrder,
                                       std::min<uint32_t>(j::kMaxBlockOrder, header_.cluster_bits));
  return o;
}

// Patches the incompatible-features field of the on-disk header in place
// (bypassing the journal, which orders this write itself).
Status Image::Impl::SetJournalDirtyInPlace(bool dirty) {
  uint8_t sector[512];
  QCRASH_RETURN_IF_ERROR(device_.Read(0, sector));
  uint64_t incompatible = LoadBe64(&sector[f::kOffIncompatibleFeatures]);
  incompatible = dirty ? (incompatible | f::kIncompatJournalDirty)
                       : (incompatible & ~f::kIncompatJournalDirty);
  StoreBe64(&sector[f::kOffIncompatibleFeatures], incompatible);
  ++stats_.metadata_writes;
  QCRASH_RETURN_IF_ERROR(device_.Write(0, sector));
  if (dirty) {
    header_.incompatible_features |= f::kIncompatJournalDirty;
  } else {
    header_.incompatible_features &= ~f::kIncompatJournalDirty;
  }
  return Status::Ok();
}

// Open, before the L1 and refcount tables are read. Decision table:
//   extension  valid  dirty   action
//   any        any    clear   nothing here (AttachJournal resets or recreates)
//   present    set    set     replay (read-only: into the overlay only)
//   missing/   -      set     corruption: an old tool cannot have cleared the
//   valid clear               valid bit of a dirty image (it refuses to open it)
Status Image::Impl::RecoverJournal() {
  const bool dirty = (header_.incompatible_features & f::kIncompatJournalDirty) != 0;
  if (!dirty) return Status::Ok();
  const HeaderExtension* ext = FindJournalExtension(header_);
  const bool valid = (header_.autoclear_features & f::kAutoclearJournalValid) != 0;
  if (ext == nullptr || !valid) {
    return Status::Corruption(std::string("journal-dirty bit set but the journal ") +
                              (ext == nullptr ? "extension is missing" : "valid bit is clear"));
  }
  const uint64_t file_size = device_.SizeBytes();
  QCRASH_ASSIGN_OR_RETURN(const j::JournalLocation location,
                          j::DecodeLocation(ext->data, header_.cluster_bits, file_size));
  auto set_dirty = [this](bool d) { return SetJournalDirtyInPlace(d); };
  auto loaded = Journal::Load(io_, location, EffectiveJournalOptions(), set_dirty);
  if (!loaded.ok()) return loaded.status().WithContext("dirty journal");
  std::unique_ptr<Journal> jn = std::move(loaded).value();
  const bool apply = !options_.read_only && !(header_.incompatible_features & f::kIncompatCorrupt);
  auto report = jn->Replay(apply);
  if (!report.ok()) return report.status().WithContext("journal replay");
  replay_report_ = std::move(report).value();
  if (!apply) {
    journal_ = std::move(jn);  // the overlay serves every metadata read
    io_.set_sink(journal_.get());
  }
  // The header itself may have been replayed: decode cluster 0 again.
  std::vector<uint8_t> cluster0(std::min<uint64_t>(file_size, cluster_bytes()));
  QCRASH_RETURN_IF_ERROR(io_.ReadMetadata(0, cluster0));
  QCRASH_ASSIGN_OR_RETURN(header_, DecodeHeader(cluster0, file_size));
  if (!apply) header_.incompatible_features &= ~f::kIncompatJournalDirty;
  return Status::Ok();
}

// Create steps:
//  1. allocate the journal area (contiguous clusters, refcount 1);
//  2. format it (zeroed ring, header) and make it and its refcounts durable;
//  3. add the header extension, set the journal-valid bit, write, flush.
Status Image::Impl::CreateJournal() {
  const JournalOptions o = EffectiveJournalOptions();
  const uint64_t clusters =
      std::max<uint64_t>(1, (o.size_bytes + cluster_bytes() - 1) / cluster_bytes());
  QCRASH_ASSIGN_OR_RETURN(const uint64_t offset, AllocateClusters(clusters));  // step 1
  const j::JournalLocation location{offset, clusters * cluster_bytes()};
  // Step 2. Why: the extension must never name clusters whose refcount or
  // contents are not durable.
  QCRASH_RETURN_IF_ERROR(FlushRefcounts(Rule::kJournalProtocol));
  auto set_dirty = [this](bool d) { return SetJournalDirtyInPlace(d); };
  QCRASH_ASSIGN_OR_RETURN(journal_, Journal::Format(io_, location, o, set_dirty));
  header_.unknown_extensions.push_back({j::kExtJournal, j::EncodeLocation(location)});  // step 3
  header_.autoclear_features |= f::kAutoclearJournalValid;
  QCRASH_RETURN_IF_ERROR(WriteHeader());
  // Why: the extension and the valid bit must be durable before the first
  // commit relies on the journal.
  return io_.DeviceFlush(Rule::kJournalProtocol);
}

// Open, at the end (read-write). Under the journal policy: reuse a valid
// journal (reset: a clean or just replayed journal is never replayed
// again), or create one; an extension without the valid bit means an old
// tool wrote the image and may have reclaimed the area: drop it, never
// touch it, create a new one.
Status Image::Impl::AttachJournal() {
  if (read_only_ || !rules_.journal()) return Status::Ok();
  if (header_.version < 3)
    return Status::InvalidArgument("the journal policy needs a compat=1.1 (v3) image");
  const HeaderExtension* ext = FindJournalExtension(header_);
  const bool valid = (header_.autoclear_features & f::kAutoclearJournalValid) != 0;
  if (ext != nullptr && valid) {
    QCRASH_ASSIGN_OR_RETURN(
        const j::JournalLocation location,
        j::DecodeLocation(ext->data, header_.cluster_bits, device_.SizeBytes()));
    auto set_dirty = [this](bool d) { return SetJournalDirtyInPlace(d); };
    auto loaded = Journal::Load(io_, location, EffectiveJournalOptions(), set_dirty);
    if (loaded.ok()) {
      journal_ = std::move(loaded).value();
      if (!replay_report_.replayed) QCRASH_RETURN_IF_ERROR(journal_->Reinit());
    } else if (loaded.status().code() == StatusCode::kCorruption) {
      // A clean journal whose header does not decode: ours (valid bit), so
      // format it again. A device error is no such proof: it fails the open
      // (found by the eio pass: an EIO here was swallowed).
      QCRASH_ASSIGN_OR_RETURN(journal_,
                              Journal::Format(io_, location, EffectiveJournalOptions(), set_dirty));
    } else {
      return loaded.status().WithContext("journal header");
    }
  } else {
    if (ext != nullptr) {
      std::erase_if(header_.unknown_extensions,
                    [](const HeaderExtension& e) { return e.type == j::kExtJournal; });
    }
    QCRASH_RETURN_IF_ERROR(CreateJournal());
  }
  io_.set_sink(journal_.get());
  // The transaction is atomic: cache dependencies have nothing left to order.
  l2_cache_->set_ignore_dependencies(true);
  IgnoreRefcountDependencies();
  return Status::Ok();
}

// Guest flush under the journal policy: every dirty table joins the open
// transaction, which one commit (one device flush) makes durable; only then
// may freed clusters be reused (their revokes are committed).
Status Image::Impl::FlushJournal() {
  QCRASH_RETURN_IF_ERROR(l2_cache_->WriteBack());
  QCRASH_RETURN_IF_ERROR(WriteBackRefcounts());
  QCRASH_RETURN_IF_ERROR(journal_->Commit());
  ReleaseQuarantine();
  return Status::Ok();
}

Status Image::Impl::AfterGuestOp() {
  if (!journal_) return Status::Ok();
  const uint64_t half_ring_bytes = uint64_t{journal_->capacity_blocks() / 2}
                                   << journal_->header().block_order;
  // An upper bound first (a dirty table journals at most all its sectors),
  // so a large ring costs nothing per operation.
  const uint64_t bound = journal_->open_bytes() +
                         (l2_cache_->dirty_count() + dirty_refcount_blocks()) * cluster_bytes();
  if (bound <= half_ring_bytes / 2) return Status::Ok();
  QCRASH_RETURN_IF_ERROR(l2_cache_->WriteBack());
  QCRASH_RETURN_IF_ERROR(WriteBackRefcounts());
  QCRASH_ASSIGN_OR_RETURN(const uint32_t blocks, journal_->BlocksToCommit());
  // Why: committing at an operation boundary is always allowed (the
  // metadata is consistent and the commit flushes the data it names first);
  // waiting for the guest's flush could need more than the whole ring.
  if (blocks > journal_->capacity_blocks() / 2) return FlushJournal();
  return Status::Ok();
}

const ReplayReport& Image::replay_report() const { return impl_->replay_report_; }

}  // namespace qcrash::engine
