// The ordering table: what each policy does to make one update durable
// before another (QCOW2-NOTES §9, rules R1-R12; engine/FORMAT.md "Ordering
// policies"), as data. The engine asks the table at named barriers
// (Image::Impl::Barrier(Rule::kContentsBeforePointer)) and never tests the
// policy itself; a bug switch is one field of a row changed; a new policy is
// one row and one enum value.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "engine/options.h"

namespace qcrash::engine {

// What must be durable before what.
enum class Rule : uint8_t {
  kRefcountBeforePointer,  // R1: refcount +1 before any pointer to the cluster
  kContentsBeforePointer,  // R2: a new table's contents before the pointer to it
  kDataBeforePointer,      // R3: guest data (and COW copies) before the L2 entry naming them
  kUnlinkBeforeFree,       // R4: the pointer's removal before the refcount decrease
  kFreeBeforeReuse,        // R5: a freed cluster is not reused until its decrease is durable
  kRevokeBeforeReuse,  // R5 under the journal: a freed cluster that committed transactions write is
                       // revoked
  kRelocateThenSwitch,  // R6: new copy, then the header switch, then the old copy freed
  kDirtyBitFirst,       // R7: lazy refcounts: the dirty bit durable before refcounts lag
  kCorruptBit,          // R11: the corrupt bit durable once set
  kEveryWrite,          // writethrough: each metadata write durable before the next
  kAcknowledgedResize,  // a completed resize survives a crash like an acknowledged write
  kGuestFlush,          // the guest's flush: every acknowledged write durable (I4)
  kHeaderFeatures,      // feature bits changed at open, durable before they are relied on
  kJournalProtocol,     // the journal's own steps (commit, checkpoint, replay; QCOW2-NOTES §12)
  kSharingChange,       // R8: a snapshot's refcount and COPIED changes, under the dirty bit
  kBitmapTracking,  // R10: a bitmap's in_use before the writes it tracks; its data before in_use
                    // clears
  kDataFileBeforePointer,  // R12: guest data in the external data file durable (a flush of
                           // that file) before the L2 entry naming it is written
  kBaseBeforeEmpty,  // R13: a commit's copies in the base durable (a flush of the base) before
                     // the top drops any cluster (engine/commit.cc)
};
inline constexpr size_t kRuleCount = kOrderingRuleCount;

// How a policy honours a rule.
enum class Mechanism : uint8_t {
  kNone,          // not at all (the unsafe policy, a bug switch, or the rule does not apply)
  kFlush,         // a device flush at the barrier (after writing back the cache it names)
  kDependency,    // a metadata-cache dependency: the other cache is flushed first, at write-back
  kWritethrough,  // every metadata write is written and flushed as it happens
  kDirtyBit,      // covered by the lazy dirty bit: refcounts rebuilt on open after a crash
  kBatch,         // extent: a batch's refcounts made durable before any cluster of it is handed out
  kQuarantine,    // freed clusters wait for the next guest flush before reuse
  kTransaction,   // inside one journal transaction: atomic, nothing to order
  kRevoke,        // a revoke record in the journal transaction
  kCommit,        // a journal commit (one device flush makes the transaction durable)
};
inline constexpr size_t kMechanismCount = 10;

const char* RuleName(Rule rule);  // "R1 refcount before pointer"
const char* RuleKey(Rule rule);   // "refcount_before_pointer" (for JSON)
const char* MechanismName(Mechanism mechanism);

struct OrderingRules {
  std::array<Mechanism, kRuleCount> how{};
  // The journal's transactions carry checksums (switch unchecksummed-journal: not).
  bool journal_checksums = true;
  // A write into an owned zero cluster reuses its host cluster, as the 2017
  // reservation thread asks (switch zero-cluster-realloc: moves it).
  bool reuse_zero_allocation = true;
  // Extended L2: a write that allocates subclusters in a host cluster the
  // entry already names orders its data before the new allocation bits (R3)
  // under strict data ordering (switch subcluster-bit-before-data: not).
  bool order_subcluster_data = true;
  // A metadata table whose write fails stays dirty in its cache, so that a
  // later write-back (the close after the error) writes it again (switch
  // failed-write-kept-clean: the cache forgets it; QEMU's iotest 026).
  bool keep_dirty_on_failed_write = true;
  // Freeing a compressed cluster drops one reference from each host cluster
  // it touches: packed host clusters count their users (switch
  // compressed-sole-user: the free drops the host cluster's whole refcount).
  bool count_compressed_users = true;
  // amend refcount_bits=: the new refcount table and blocks are made
  // durable before the header switches to them (R6; switch
  // amend-header-before-refcounts: the barrier is skipped).
  bool order_refcount_switch = true;
  // amend compat=0.10: the expanded L2 entries and their zeroed clusters
  // are made durable before the header says version 2 (switch
  // amend-v2-before-expansion: they are not).
  bool order_downgrade_switch = true;
  // A shrink makes the dropped tail (its unmapped L2 entries, its frees)
  // durable before the header names the smaller size (switch
  // shrink-header-before-tail: the L2 changes stay in the cache, and a crash
  // after a later growth shows the old tail's data in the regrown disk).
  bool drop_tail_before_shrink = true;
  // A safe rebase makes the ranges it copies from the old backing file
  // durable (a guest flush) before the header names the new one, R6's
  // copy-then-switch (switch rebase-header-before-copy: the copies' L2
  // entries stay in the cache, and a crash after the switch reads the new
  // backing file where the guest read the old one's bytes).
  bool copy_before_backing_switch = true;

  Mechanism Of(Rule rule) const { return how[static_cast<size_t>(rule)]; }
  void Set(Rule rule, Mechanism mechanism) { how[static_cast<size_t>(rule)] = mechanism; }
  // Metadata goes through journal transactions.
  bool journal() const { return Of(Rule::kGuestFlush) == Mechanism::kCommit; }
  // The metadata caches order their write-backs (some rule uses a dependency).
  bool cache_dependencies() const;
  bool operator==(const OrderingRules&) const = default;
};

// The row of `policy` with the bug switches applied (each changes one field).
OrderingRules RulesFor(OrderingPolicy policy, const BugSwitches& switches);

}  // namespace qcrash::engine
