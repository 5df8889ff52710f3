// The explorer's properties. Every policy but unsafe survives every crash
// state of prefix, drop-one, tear-one and bounded(2), and a random sample
// beyond; unsafe and every bug switch are caught, each with a minimized
// counterexample; recovery survives a crash of its own (I8).
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <cstdlib>
#include <memory>

#include "engine/bug_catalogue.h"
#include "engine/check.h"
#include "engine/ordering.h"
#include "properties/explorer.h"
#include "tests/properties/generators.h"

namespace qcrash::properties {
namespace {

// States per enumerator and case; QCRASH_SOAK=1 lifts the cap.
uint64_t StatesCap() { return std::getenv("QCRASH_SOAK") ? 0 : 300; }

std::string Describe(const Workload& w, const engine::OpenOptions& o, uint32_t sector_bytes) {
  std::string out =
      std::string("policy ") + engine::PolicyName(o.policy) + ", v" +
      std::to_string(w.image.version) + ", cluster_bits " + std::to_string(w.image.cluster_bits) +
      ", refcount_order " + std::to_string(w.image.refcount_order) + ", L2 cache " +
      std::to_string(o.l2_cache_tables) + ", sector " + std::to_string(sector_bytes) + ", ops:";
  for (const GuestOp& op : w.ops) out += " [" + DescribeOp(op) + "]";
  return out;
}

void ExpectNoViolation(const ExploreConfig& config) {
  auto report = Explore(config);
  RC_ASSERT(report.ok());
  if (report->violating_states != 0) {
    const FoundViolation& v = report->violations.front();
    RC_FAIL(Describe(config.workload, config.run.open, config.run.sector_bytes) + "\n" +
            report->enumerator + " state " + v.state_id + ": " + v.invariant + ": " + v.message);
  }
  RC_ASSERT(report->workload_error.empty());
}

RC_GTEST_PROP(Explorer, SafePoliciesSurviveEveryCrashState, ()) {
  ExploreConfig config;
  config.workload = *GenWorkload();
  config.run.open = *GenSafeEngine(config.workload);
  config.run.sector_bytes = *rc::gen::element<uint32_t>(512, 4096);
  config.states_max = StatesCap();
  config.stop_at_first_violation = true;
  for (const char* e : {"prefix", "drop-one", "tear-one", "bounded:2", "random:7:200"}) {
    config.enumerator = *sim::ParseEnumeratorSpec(e);
    ExpectNoViolation(config);
  }
}

// I8: a crash anywhere in the recovery (refcount rebuild, repair) of a crash
// state recovers too. Nested states are costly: a few per state.
RC_GTEST_PROP(Explorer, RecoverySurvivesACrashOfItsOwn, ()) {
  ExploreConfig config;
  config.workload = *GenWorkload();
  config.run.open = *GenSafeEngine(config.workload);
  config.enumerator = *sim::ParseEnumeratorSpec("random:3:20");
  config.recovery.nested_enumerator = "random:5:8";
  config.stop_at_first_violation = true;
  ExpectNoViolation(config);
}

// I8 holds a crash of recovery to what the full recovery achieved. Under the
// unsafe policy a dropped L2 write leaves junk that repair keeps as plausible
// pointers into a junk cluster (guest 0x340000 of v2 reads it after a full
// recovery too); the nested pass must not blame the nested crash for it. This
// is the cell CI failed on before the nested check took the full recovery as
// its baseline from a corrupt image.
TEST(Explorer, ANestedCrashIsNotBlamedForWhatTheFullRecoveryLeft) {
  ExploreConfig config;
  config.workload = *BuiltinWorkload("v2");
  config.run.open.policy = engine::OrderingPolicy::kUnsafe;
  config.run.open.l2_cache_tables = 2;
  config.enumerator = *sim::ParseEnumeratorSpec("drop-one@1/11");
  config.recovery.nested_enumerator = "epochs";
  config.recovery.recovery_invariants_only = true;
  auto report = Explore(config);
  ASSERT_TRUE(report.ok());
  EXPECT_GT(report->states_checked, 0u);
  EXPECT_EQ(report->violating_states, 0u)
      << (report->violations.empty() ? "" : report->violations[0].message);
}

// A refcount table entry that pointed outside the image before recovery
// points inside it once the rebuild grew the file: a nested crash then shows
// the same broken entry as a block of wrong counts, not a new corruption.
// (The state --generated 60 reported as I8 before CheckNoWorse knew this.)
TEST(Explorer, ARefcountBlockOutsideTheImageIsNotNewOnceTheFileGrows) {
  RunOptions run;
  run.open.policy = engine::OrderingPolicy::kUnsafe;
  run.open.l2_cache_tables = 2;
  RecoveryOptions recovery;
  recovery.nested_enumerator = "epochs";
  recovery.recovery_invariants_only = true;
  auto result =
      ReplayState(*BuiltinWorkload("refcount-table-growth"), run, recovery, "p3948:2758=0");
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_TRUE(result->violations.empty()) << result->violations.front().message;
}

// A junk L2 table of 64 KiB clusters (8192 entries) alone gives some 20,000
// findings, more than a report keeps (engine::kMaxFindings); the refcount
// findings come after the walk's, so the L2 table's refcount of 0 and its
// L1 entry's OFLAG_COPIED were corrupt before recovery but not in the kept
// list. A nested crash that drops the rebuild's header switch leaves them
// as they were, which is no worse. Before the starting set held every
// corruption (CheckOptions::list_corrupt_clusters) this state reported
// "I8 ... p7:0=0: refcount-zero-in-use at 0x40000" (/work/repro/repair-64k.json).
TEST(Explorer, ACorruptionPastTheKeptFindingsIsNotNewAfterANestedCrash) {
  Workload workload;
  workload.name = "junk-l2-64k";
  workload.image.size_bytes = 2 << 20;
  workload.image.cluster_bits = 16;
  workload.backing = true;
  workload.ops.push_back({OpKind::kWrite, 69632, 2048});
  RunOptions run;
  run.open.policy = engine::OrderingPolicy::kUnsafe;
  run.open.l2_cache_tables = 2;
  RecoveryOptions recovery;
  recovery.nested_enumerator = "epochs";
  recovery.recovery_invariants_only = true;
  auto result = ReplayState(workload, run, recovery, "p2:640=0");
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_TRUE(result->violations.empty()) << result->violations.front().message;
  EXPECT_GT(result->raw_corruptions, engine::kMaxFindings);
}

// The corrupt-start pass: the workload runs to a clean close, a corruption
// class is applied, and the one crash state is the corrupt image, whose
// repair is crashed at every epoch of its own writes (I8). A class with
// nothing to corrupt in the image is an error, not an empty pass.
TEST(Explorer, ACorruptStartCrashesTheRepairAtEveryEpoch) {
  ExploreConfig config;
  config.workload = *BuiltinWorkload("default");
  config.run.corruption = Corruption::kMisalignedData;
  config.recovery.nested_enumerator = "epochs";
  config.recovery.nested_states_max = 4096;
  config.recovery.recovery_invariants_only = true;
  auto run = RunWorkload(config.workload, config.run);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->log->size(), 0u);
  EXPECT_EQ(run->timeline->PointCount(), 1u);
  // misaligned-data: repair drops a pointer (its table edit is flushed
  // before refcounts drop); marked-corrupt: the corrupt bit is cleared only
  // once the refcount fixes are durable.
  for (const Corruption c : {Corruption::kMisalignedData, Corruption::kMarkedCorrupt}) {
    config.run.corruption = c;
    auto report = Explore(config);
    ASSERT_TRUE(report.ok());
    EXPECT_EQ(report->states_checked, 1u);
    EXPECT_EQ(report->verdicts[static_cast<size_t>(Verdict::kRepaired)] +
                  report->verdicts[static_cast<size_t>(Verdict::kDataLoss)],
              1u);
    EXPECT_EQ(report->violating_states, 0u)
        << CorruptionName(c) << ": "
        << (report->violations.empty() ? "" : report->violations[0].message);
  }
  RunOptions compressed;
  compressed.corruption = Corruption::kCompressedCopied;  // the engine writes no compressed cluster
  EXPECT_FALSE(RunWorkload(config.workload, compressed).ok());
}

// The harness must not pass a broken engine: the unsafe policy fails.
TEST(Explorer, UnsafePolicyIsCaught) {
  ExploreConfig config;
  config.workload = *BuiltinWorkload("default");
  config.run.open.policy = engine::OrderingPolicy::kUnsafe;
  config.enumerator = *sim::ParseEnumeratorSpec("prefix");
  auto report = Explore(config);
  ASSERT_TRUE(report.ok());
  EXPECT_GT(report->violating_states, 0u);
  EXPECT_GT(report->violations_by_invariant["I1"], 0u);
}

// Each known bug of the catalogue (engine/bug_catalogue.h), switched on, is
// caught within a small fixed budget and minimized to a counterexample no
// larger than its workload.
class BugCatalogue : public ::testing::TestWithParam<engine::KnownBug> {};

TEST_P(BugCatalogue, IsCaughtWithAMinimizedCounterexample) {
  const engine::KnownBug& c = GetParam();
  ExploreConfig config;
  config.workload = *BuiltinWorkload(c.workload);
  config.run.open.policy = c.policy;
  ASSERT_TRUE(engine::EnableBug(c.name, config.run.open.faults).ok());
  if (std::string(c.journal_options) == "recovery=scan") {
    config.run.open.journal.recovery = engine::JournalRecovery::kScanOnly;
  } else {
    ASSERT_EQ(std::string(c.journal_options), "")
        << "teach this test the catalogue's --journal options";
  }
  // eio is no crash enumerator: each device request fails in turn.
  config.io_errors = std::string(c.enumerator) == "eio";
  config.enumerator = *sim::ParseEnumeratorSpec(config.io_errors ? "prefix" : c.enumerator);
  config.states_max = 5000;
  config.stop_at_first_violation = true;
  auto report = Explore(config);
  ASSERT_TRUE(report.ok());
  ASSERT_FALSE(report->violations.empty()) << c.name << " was not caught";
  FoundViolation v = report->violations.front();
  bool expected_invariant = false;
  for (const auto& [name, count] : report->violations_by_invariant)
    expected_invariant |= name == c.invariant;
  EXPECT_TRUE(expected_invariant) << "first: " << v.invariant << ": " << v.message;
  Minimize(config, v, 5000);
  EXPECT_LE(v.minimized_workload.ops.size(), config.workload.ops.size());
  std::printf("%s: %s at %s; minimized to %zu ops, state %s: %s\n", c.name, v.invariant.c_str(),
              v.state_id.c_str(), v.minimized_workload.ops.size(), v.minimized_state_id.c_str(),
              v.minimized_message.c_str());
  for (const GuestOp& op : v.minimized_workload.ops) std::printf("  %s\n", DescribeOp(op).c_str());
  auto replay =
      ReplayState(v.minimized_workload, config.run, config.recovery, v.minimized_state_id);
  ASSERT_TRUE(replay.ok());
  bool reproduced = false;
  for (const Violation& r : replay->violations) reproduced |= r.invariant == c.invariant;
  EXPECT_TRUE(reproduced) << "the minimized counterexample must replay";
  // The same workload without the switch is clean.
  config.run.open.faults = {};
  config.states_max = 0;
  auto clean = Explore(config);
  ASSERT_TRUE(clean.ok());
  EXPECT_EQ(clean->violating_states, 0u);
}

INSTANTIATE_TEST_SUITE_P(Switches, BugCatalogue,
                         ::testing::ValuesIn(engine::KnownBugs().begin(),
                                             engine::KnownBugs().end()),
                         [](const ::testing::TestParamInfo<engine::KnownBug>& param_info) {
                           std::string name = param_info.param.name;
                           for (char& ch : name) ch = ch == '-' ? '_' : ch;
                           return name;
                         });

// The seeds' built-in workloads, every safe policy, every deterministic
// enumerator: no violation. This is the matrix the crash gate pins.
TEST(Explorer, BuiltinWorkloadsPassUnderEverySafePolicy) {
  for (const std::string& name : BuiltinWorkloadNames()) {
    for (auto policy : {engine::OrderingPolicy::kWritethrough, engine::OrderingPolicy::kOrdered,
                        engine::OrderingPolicy::kLazy, engine::OrderingPolicy::kExtent,
                        engine::OrderingPolicy::kJournal}) {
      ExploreConfig config;
      config.workload = *BuiltinWorkload(name);
      const bool needs_v3 =
          policy == engine::OrderingPolicy::kLazy || policy == engine::OrderingPolicy::kJournal;
      if (config.workload.image.version < 3 && needs_v3) continue;
      config.run.open.policy = policy;
      config.run.open.l2_cache_tables = 2;
      for (const char* e : {"prefix", "drop-one", "tear-one", "bounded:2"}) {
        config.enumerator = *sim::ParseEnumeratorSpec(e);
        config.states_max = 3000;  // the crash gate runs each cell further
        auto report = Explore(config);
        ASSERT_TRUE(report.ok()) << name << " " << engine::PolicyName(policy) << ": "
                                 << report.status().ToString();
        EXPECT_EQ(report->violating_states, 0u)
            << name << " " << engine::PolicyName(policy) << " " << e << ": "
            << (report->violations.empty() ? ""
                                           : report->violations.front().state_id + " " +
                                                 report->violations.front().message);
      }
    }
  }
}

// The qemu data ordering shows its price: a full-cluster write into a
// reused cluster may expose the cluster's old contents, which the explorer
// reports as their own verdict (not a violation); strict ordering never
// does, and pays for it in flushes.
TEST(Explorer, QemuDataOrderingExposesStaleDataAsItsOwnVerdict) {
  ExploreConfig config;
  config.workload = *BuiltinWorkload("stale-reuse");
  config.run.open.policy = engine::OrderingPolicy::kLazy;
  config.run.open.data_ordering = engine::DataOrdering::kQemu;
  config.enumerator = *sim::ParseEnumeratorSpec("bounded:2");
  auto qemu = Explore(config);
  ASSERT_TRUE(qemu.ok());
  EXPECT_EQ(qemu->violating_states, 0u);
  const uint64_t stale = qemu->verdicts[static_cast<int>(Verdict::kStaleDataExposed)];
  EXPECT_GT(stale, 0u);
  config.run.open.data_ordering = engine::DataOrdering::kStrict;
  auto strict = Explore(config);
  ASSERT_TRUE(strict.ok());
  EXPECT_EQ(strict->violating_states, 0u);
  EXPECT_EQ(strict->verdicts[static_cast<int>(Verdict::kStaleDataExposed)], 0u);
  EXPECT_GT(strict->stats.device_flushes, qemu->stats.device_flushes);
  std::printf(
      "qemu ordering: %llu of %llu states stale-data-exposed, %llu flushes; strict: %llu flushes\n",
      static_cast<unsigned long long>(stale), static_cast<unsigned long long>(qemu->states_checked),
      static_cast<unsigned long long>(qemu->stats.device_flushes),
      static_cast<unsigned long long>(strict->stats.device_flushes));
}

// A new policy is one row of the ordering table (engine/ordering.h) and an
// enum value: the engine needs nothing else. Here a row no built-in policy
// has, "ordered metadata, journal-style quarantine, but every L1 and
// refcount-table entry flushed at once" (ordered's row with the writethrough
// cell for single entries), runs through the explorer on every built-in v3
// workload without a violation (it found a cache dependency that dropped
// the data flush, MetadataCache::SatisfyDependencies); ordered's row with
// R2 taken away is caught.
TEST(Explorer, AHypotheticalPolicyIsOneRowOfTheTable) {
  engine::OrderingRules row = engine::RulesFor(engine::OrderingPolicy::kOrdered, {});
  row.Set(engine::Rule::kEveryWrite, engine::Mechanism::kFlush);
  std::string first;  // the first violation seen, for the failure message
  auto run = [&row, &first](const std::string& name, const char* enumerator) -> uint64_t {
    ExploreConfig config;
    config.workload = *BuiltinWorkload(name);
    config.run.open.rules = std::make_shared<const engine::OrderingRules>(row);
    config.run.open.l2_cache_tables = 2;
    config.enumerator = *sim::ParseEnumeratorSpec(enumerator);
    config.states_max = 3000;
    config.minimize = false;
    auto report = Explore(config);
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    if (!report.ok()) return 0;
    if (!report->violations.empty())
      first = report->violations[0].state_id + " " + report->violations[0].message;
    return report->violating_states;
  };
  for (const std::string& name : BuiltinWorkloadNames()) {
    for (const char* e : {"prefix", "drop-one"})
      EXPECT_EQ(run(name, e), 0u) << name << " " << e << ": " << first;
  }
  // Ordered's own row without R2 (the hybrid's writethrough entries would
  // mask it): a table's pointer may reach the disk before its contents.
  row = engine::RulesFor(engine::OrderingPolicy::kOrdered, {});
  row.Set(engine::Rule::kContentsBeforePointer, engine::Mechanism::kNone);
  uint64_t caught = 0;
  for (const std::string& name : BuiltinWorkloadNames()) caught += run(name, "drop-one");
  EXPECT_GT(caught, 0u) << "a row without R2 passed every built-in workload";
}

}  // namespace
}  // namespace qcrash::properties
