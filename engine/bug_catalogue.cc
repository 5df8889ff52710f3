// The known-bug catalogue's one table.
#include "engine/bug_catalogue.h"

namespace qcrash::engine {
namespace {

constexpr KnownBug kBugs[] = {
    {"skip-refcount-barrier", &BugSwitches::skip_refcount_barrier,
     "2010 revert of synchronous metadata writes (the ordered write-back caches)",
     "an L2 entry may reach the disk before its cluster's refcount: a pointer to a free cluster",
     "I1", "2010-dangling-l2", OrderingPolicy::kOrdered, "", "drop-one"},
    {"early-free-reuse", &BugSwitches::early_free_reuse,
     "2010, same thread: the free-list discussion",
     "a freed cluster is reused before its old L2 entry is gone on disk: two owners, foreign data",
     "I5", "free-reuse", OrderingPolicy::kLazy, "", "drop-one"},
    {"zero-cluster-realloc", &BugSwitches::zero_cluster_realloc, "2017 cluster reservations",
     "a write into an allocated zero cluster moves it instead of reusing its reservation", "I10",
     "2017-zero-realloc", OrderingPolicy::kOrdered, "", "drop-one"},
    {"no-revoke", &BugSwitches::no_revoke, "2013 journal draft review (Kevin's revoke scenario)",
     "a freed metadata cluster is reused while an older journal transaction still writes to it: "
     "stale replay",
     "I6", "2013-journal-revoke", OrderingPolicy::kJournal, "", "drop-one"},
    {"unchecksummed-journal", &BugSwitches::unchecksummed_journal,
     "2013 first journal proposal (no commit record: recovery scans for transactions)",
     "a torn journal transaction replays as valid", "I1", "journal-wrap", OrderingPolicy::kJournal,
     "recovery=scan", "drop-one"},
    {"failed-write-kept-clean", &BugSwitches::failed_write_kept_clean,
     "2010 revert of synchronous metadata writes (the patch's error paths: a failed write "
     "returns -EIO, and the table must still be written later)",
     "a metadata table whose write failed is forgotten as clean: the close after the error "
     "writes what depends on it, not the table",
     "I13", "default", OrderingPolicy::kOrdered, "", "eio"},
    {"snapshot-without-dirty-bit", &BugSwitches::snapshot_without_dirty_bit,
     "2015 dirty bitmaps spec thread (snapshots and the COPIED flag they clear)",
     "a snapshot's refcount raises and COPIED clears land separately: a crash leaves COPIED set "
     "on a shared cluster, or clear on an owned one",
     "I1", "snapshots", OrderingPolicy::kOrdered, "", "drop-one"},
    {"bitmap-no-inuse", &BugSwitches::bitmap_no_inuse, "2015 persistent dirty bitmap spec thread",
     "a bitmap's in_use flag is written but not made durable before the guest writes it tracks: "
     "a crash leaves a bitmap that looks consistent and misses those writes",
     "I11", "bitmaps", OrderingPolicy::kOrdered, "", "drop-one"},
    {"subcluster-bit-before-data", &BugSwitches::subcluster_bit_before_data,
     "2017 cluster reservations thread (subclusters: no copy-on-write of untouched data)",
     "a write that allocates subclusters in an already allocated host cluster sets their "
     "allocation bits without waiting for the data: a crash exposes what the host cluster held "
     "there before (a discarded subcluster's old data)",
     "I5", "subclusters", OrderingPolicy::kOrdered, "", "drop-one"},
    {"compressed-sole-user", &BugSwitches::compressed_sole_user,
     "qcow2 compressed clusters (QEMU's byte allocator packs several into one host cluster)",
     "freeing a compressed cluster treats it as its host cluster's only user: the refcount "
     "drops to 0 while other compressed clusters still live there",
     "I1", "compressed", OrderingPolicy::kOrdered, "", "drop-one"},
    {"data-file-no-flush", &BugSwitches::data_file_no_flush,
     "2010 revert of synchronous metadata writes (guest data before the L2 entry), with an "
     "external data file: two files, two flushes",
     "the data file is not flushed before the L2 entry naming its cluster is written: a crash "
     "keeps the mapping and loses the data, and the guest reads the data file's old bytes",
     "I5", "data-file", OrderingPolicy::kOrdered, "", "drop-one"},
    {"amend-header-before-refcounts", &BugSwitches::amend_header_before_refcounts,
     "issue 20 (qemu-img amend refcount_bits=): QEMU's qcow2_change_refcount_order writes the "
     "new reftable and refblocks, then switches the header",
     "the header switch to the new refcount table and width is not ordered after the new "
     "structures: a crash leaves a header naming refcount blocks that never reached the disk",
     "I1", "amend", OrderingPolicy::kOrdered, "", "drop-one"},
    {"amend-v2-before-expansion", &BugSwitches::amend_v2_before_expansion,
     "issue 20 (qemu-img amend compat=0.10): QEMU's qcow2_downgrade expands zero clusters, then "
     "writes the version 2 header",
     "the version 2 header is not ordered after the expanded L2 entries: a crash leaves a v2 "
     "image whose L2 entries still carry the v3 zero flag",
     "I7", "amend", OrderingPolicy::kOrdered, "", "epochs"},
    {"shrink-header-before-tail", &BugSwitches::shrink_header_before_tail,
     "qemu-img resize --shrink (QEMU's qcow2_co_truncate discards the tail before it writes the "
     "smaller size)",
     "a shrink writes the smaller size and flushes it while the L2 entries that unmap the dropped "
     "tail are still in the cache: a crash after the disk grows again shows the old tail's data "
     "where the regrown disk must read zeroes",
     "I4", "resize", OrderingPolicy::kOrdered, "", "drop-one"},
    {"rebase-header-before-copy", &BugSwitches::rebase_header_before_copy,
     "qemu-img rebase (safe mode copies what the new backing file reads differently, then "
     "changes the backing file name)",
     "a safe rebase writes the new backing file name while the L2 entries of the ranges it "
     "copied from the old backing file are still in the cache: a crash after the switch reads "
     "the new backing file's bytes where the guest read the old one's",
     "I5", "rebase", OrderingPolicy::kOrdered, "", "drop-one"},
    {"commit-empty-before-base-flush", &BugSwitches::commit_empty_before_base_flush,
     "QEMU's qemu-img commit (block/commit.c copies into the base, then make_empty drops the "
     "top's clusters): two files, two flushes",
     "the top is emptied (and flushed) before the base's copies are flushed: a crash keeps the "
     "emptied top and drops the copies, and the guest reads the base's old data",
     "I4", "commit", OrderingPolicy::kOrdered, "", "drop-one"},
};

// Every field of BugSwitches has its row (a new switch without one fails here).
static_assert(sizeof(BugSwitches) == std::size(kBugs) * sizeof(bool),
              "a bug switch is missing from the catalogue");

}  // namespace

std::span<const KnownBug> KnownBugs() { return kBugs; }

const KnownBug* FindKnownBug(std::string_view name) {
  for (const KnownBug& bug : kBugs) {
    if (name == bug.name) return &bug;
  }
  return nullptr;
}

Status EnableBug(std::string_view name, BugSwitches& switches) {
  const KnownBug* bug = FindKnownBug(name);
  if (bug == nullptr) {
    std::string known;
    for (const KnownBug& b : kBugs) known += std::string(known.empty() ? "" : ", ") + b.name;
    return Status::InvalidArgument("unknown bug switch '" + std::string(name) +
                                   "' (known: " + known + ")");
  }
  switches.*(bug->field) = true;
  return Status::Ok();
}

std::vector<std::string> EnabledBugNames(const BugSwitches& switches) {
  std::vector<std::string> names;
  for (const KnownBug& bug : kBugs) {
    if (switches.*(bug.field)) names.push_back(bug.name);
  }
  return names;
}

}  // namespace qcrash::engine
