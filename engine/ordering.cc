// The ordering table, one row per policy, written from engine/FORMAT.md's
// "Ordering policies" table; the bug switches, one field each.
#include "engine/ordering.h"

namespace qcrash::engine {
namespace {

using M = Mechanism;

// One row: the mechanism for each rule, in Rule order.
struct Row {
  OrderingPolicy policy;
  std::array<Mechanism, kRuleCount> how;
};

// clang-format off
//                          R1             R2         R3             R4             R5              R5 revoke  R6         R7        R11        every write  resize     guest flush header     journal  R8          R10      R12             R13
constexpr Row kTable[] = {
  {OrderingPolicy::kWritethrough,
                          {M::kWritethrough, M::kFlush, M::kDependency, M::kDependency, M::kWritethrough, M::kNone,  M::kFlush, M::kNone, M::kFlush, M::kFlush, M::kFlush, M::kFlush, M::kFlush, M::kFlush, M::kDirtyBit, M::kFlush, M::kDependency, M::kFlush}},
  {OrderingPolicy::kOrdered,
                          {M::kDependency, M::kFlush, M::kDependency, M::kDependency, M::kQuarantine, M::kNone,   M::kFlush, M::kNone, M::kFlush, M::kNone,  M::kFlush, M::kFlush, M::kFlush, M::kFlush, M::kDirtyBit, M::kFlush, M::kDependency, M::kFlush}},
  {OrderingPolicy::kLazy,
                          {M::kDirtyBit,   M::kFlush, M::kDependency, M::kDirtyBit,   M::kQuarantine, M::kNone,   M::kFlush, M::kFlush, M::kFlush, M::kNone, M::kFlush, M::kFlush, M::kFlush, M::kFlush, M::kDirtyBit, M::kFlush, M::kDependency, M::kFlush}},
  {OrderingPolicy::kExtent,
                          {M::kBatch,      M::kFlush, M::kDependency, M::kDependency, M::kQuarantine, M::kNone,   M::kFlush, M::kNone, M::kFlush, M::kNone,  M::kFlush, M::kFlush, M::kFlush, M::kFlush, M::kDirtyBit, M::kFlush, M::kDependency, M::kFlush}},
  {OrderingPolicy::kJournal,
                          {M::kTransaction, M::kTransaction, M::kCommit, M::kTransaction, M::kQuarantine, M::kRevoke, M::kTransaction, M::kNone, M::kTransaction, M::kNone, M::kCommit, M::kCommit, M::kFlush, M::kFlush, M::kNone, M::kNone, M::kCommit, M::kFlush}},
  {OrderingPolicy::kUnsafe,
                          {M::kNone,       M::kNone,  M::kNone,       M::kNone,       M::kNone,       M::kNone,   M::kNone,  M::kNone, M::kFlush, M::kNone,  M::kFlush, M::kFlush, M::kFlush, M::kFlush, M::kNone, M::kNone, M::kNone, M::kNone}},
};
// clang-format on

}  // namespace

const char* RuleName(Rule rule) {
  switch (rule) {
    case Rule::kRefcountBeforePointer:
      return "R1 refcount before pointer";
    case Rule::kContentsBeforePointer:
      return "R2 contents before pointer";
    case Rule::kDataBeforePointer:
      return "R3 data before pointer";
    case Rule::kUnlinkBeforeFree:
      return "R4 unlink before free";
    case Rule::kFreeBeforeReuse:
      return "R5 free before reuse";
    case Rule::kRevokeBeforeReuse:
      return "R5 revoke before reuse (journal)";
    case Rule::kRelocateThenSwitch:
      return "R6 relocate, then switch";
    case Rule::kDirtyBitFirst:
      return "R7 dirty bit first (lazy)";
    case Rule::kCorruptBit:
      return "R11 corrupt bit";
    case Rule::kEveryWrite:
      return "every metadata write (writethrough)";
    case Rule::kAcknowledgedResize:
      return "acknowledged resize";
    case Rule::kGuestFlush:
      return "guest flush";
    case Rule::kHeaderFeatures:
      return "header feature bits";
    case Rule::kJournalProtocol:
      return "journal protocol";
    case Rule::kSharingChange:
      return "R8 sharing change under the dirty bit (snapshots)";
    case Rule::kBitmapTracking:
      return "R10 bitmap in_use around tracked writes";
    case Rule::kDataFileBeforePointer:
      return "R12 data file before pointer";
    case Rule::kBaseBeforeEmpty:
      return "R13 commit: base before empty";
  }
  return "?";
}

const char* RuleKey(Rule rule) {
  switch (rule) {
    case Rule::kRefcountBeforePointer:
      return "refcount_before_pointer";
    case Rule::kContentsBeforePointer:
      return "contents_before_pointer";
    case Rule::kDataBeforePointer:
      return "data_before_pointer";
    case Rule::kUnlinkBeforeFree:
      return "unlink_before_free";
    case Rule::kFreeBeforeReuse:
      return "free_before_reuse";
    case Rule::kRevokeBeforeReuse:
      return "revoke_before_reuse";
    case Rule::kRelocateThenSwitch:
      return "relocate_then_switch";
    case Rule::kDirtyBitFirst:
      return "dirty_bit_first";
    case Rule::kCorruptBit:
      return "corrupt_bit";
    case Rule::kEveryWrite:
      return "every_write";
    case Rule::kAcknowledgedResize:
      return "acknowledged_resize";
    case Rule::kGuestFlush:
      return "guest_flush";
    case Rule::kHeaderFeatures:
      return "header_features";
    case Rule::kJournalProtocol:
      return "journal_protocol";
    case Rule::kSharingChange:
      return "sharing_change";
    case Rule::kBitmapTracking:
      return "bitmap_in_use";
    case Rule::kDataFileBeforePointer:
      return "data_file_before_l2";
    case Rule::kBaseBeforeEmpty:
      return "base_before_empty";
  }
  return "?";
}

const char* MechanismName(Mechanism mechanism) {
  switch (mechanism) {
    case Mechanism::kNone:
      return "none";
    case Mechanism::kFlush:
      return "flush";
    case Mechanism::kDependency:
      return "dependency";
    case Mechanism::kWritethrough:
      return "writethrough";
    case Mechanism::kDirtyBit:
      return "dirty-bit";
    case Mechanism::kBatch:
      return "batch";
    case Mechanism::kQuarantine:
      return "quarantine";
    case Mechanism::kTransaction:
      return "transaction";
    case Mechanism::kRevoke:
      return "revoke";
    case Mechanism::kCommit:
      return "commit";
  }
  return "?";
}

bool OrderingRules::cache_dependencies() const {
  for (const Rule rule :
       {Rule::kRefcountBeforePointer, Rule::kDataBeforePointer, Rule::kUnlinkBeforeFree}) {
    if (Of(rule) == Mechanism::kDependency) return true;
  }
  return false;
}

OrderingRules RulesFor(OrderingPolicy policy, const BugSwitches& switches) {
  OrderingRules rules;
  for (const Row& row : kTable) {
    if (row.policy == policy) rules.how = row.how;
  }
  // The known-bug catalogue: each switch takes one guarantee away.
  if (switches.skip_refcount_barrier) rules.Set(Rule::kRefcountBeforePointer, Mechanism::kNone);
  if (switches.early_free_reuse) rules.Set(Rule::kFreeBeforeReuse, Mechanism::kNone);
  if (switches.no_revoke) rules.Set(Rule::kRevokeBeforeReuse, Mechanism::kNone);
  if (switches.unchecksummed_journal) rules.journal_checksums = false;
  if (switches.zero_cluster_realloc) rules.reuse_zero_allocation = false;
  if (switches.failed_write_kept_clean) rules.keep_dirty_on_failed_write = false;
  if (switches.snapshot_without_dirty_bit) rules.Set(Rule::kSharingChange, Mechanism::kNone);
  if (switches.bitmap_no_inuse) rules.Set(Rule::kBitmapTracking, Mechanism::kNone);
  if (switches.subcluster_bit_before_data) rules.order_subcluster_data = false;
  if (switches.compressed_sole_user) rules.count_compressed_users = false;
  if (switches.data_file_no_flush) rules.Set(Rule::kDataFileBeforePointer, Mechanism::kNone);
  if (switches.amend_header_before_refcounts) rules.order_refcount_switch = false;
  if (switches.amend_v2_before_expansion) rules.order_downgrade_switch = false;
  if (switches.shrink_header_before_tail) rules.drop_tail_before_shrink = false;
  if (switches.rebase_header_before_copy) rules.copy_before_backing_switch = false;
  if (switches.commit_empty_before_base_flush) rules.Set(Rule::kBaseBeforeEmpty, Mechanism::kNone);
  return rules;
}

}  // namespace qcrash::engine
