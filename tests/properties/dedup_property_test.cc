// The deduplicating recovery (properties/dedup.h) is sound: on generated
// workloads, under every policy (unsafe too) and with bug switches on, each
// crash state gets the verdict and the set of broken invariants a full
// recovery gives it, state for state. The crash states include corrupt ones
// (unsafe, bugs), dirty ones (lazy), journal replays, data files, snapshots,
// bitmaps and compressed clusters, as the generator mixes them in.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <cstdlib>
#include <set>
#include <string>

#include "engine/bug_catalogue.h"
#include "properties/dedup.h"
#include "properties/explorer.h"
#include "properties/generate.h"
#include "sim/enumerators.h"

namespace qcrash::properties {
namespace {

// States per enumerator and case; QCRASH_SOAK=1 lifts the cap.
uint64_t StatesCap() { return std::getenv("QCRASH_SOAK") ? 100000 : 150; }

std::set<std::string> Invariants(const StateResult& r) {
  std::set<std::string> out;
  for (const Violation& v : r.violations) out.insert(v.invariant);
  return out;
}

std::string Join(const std::set<std::string>& s) {
  std::string out;
  for (const std::string& x : s) out += (out.empty() ? "" : ",") + x;
  return out.empty() ? "none" : out;
}

struct Tally {
  uint64_t states = 0;
  uint64_t recoveries = 0;
};

// Every state of `spec` (capped): the deduplicated result equals the full one.
void ExpectSameVerdicts(const WorkloadRun& run, const std::string& spec_text,
                        const std::string& what, Tally& tally) {
  const GuestOracle oracle(run);
  StateDeduper deduper(run, oracle, {});
  auto parsed = sim::ParseEnumeratorSpec(spec_text);
  RC_ASSERT(parsed.ok());
  sim::EnumeratorSpec spec = ResolveEnumerator(*parsed, run);
  // The data pass yields thousands of states at one point: a stride spreads
  // the capped states over the points.
  const uint64_t total = sim::CountCrashStates(*run.timeline, spec);
  if (spec.kind == sim::EnumeratorKind::kData && total > StatesCap()) {
    spec.shard_count = total / StatesCap();
    spec.shard_index = *rc::gen::inRange<uint64_t>(0, spec.shard_count);
  }
  auto enumerator = sim::CrashEnumerator::Create(*run.timeline, spec);
  sim::CrashState state;
  for (uint64_t n = 0; n < StatesCap() && enumerator->Next(&state); ++n) {
    const StateResult full = RecoverState(run, oracle, enumerator->point(), state, {});
    const StateResult& dedup = deduper.Recover(enumerator->point(), state);
    if (full.verdict != dedup.verdict || Invariants(full) != Invariants(dedup)) {
      RC_FAIL(what + ", " + spec_text + " state " + sim::FormatCrashStateId(state) +
              ": full recovery " + VerdictName(full.verdict) + " (" + Join(Invariants(full)) +
              ("" + (full.violations.empty() ? std::string() : ": " + full.violations[0].message)) +
              "), deduplicated " + VerdictName(dedup.verdict) + " (" + Join(Invariants(dedup)) +
              ")");
    }
    ++tally.states;
  }
  tally.recoveries += deduper.recoveries_run();
}

RC_GTEST_PROP(Dedup, DeduplicatedVerdictsEqualFullVerdicts, ()) {
  const uint64_t seed = *rc::gen::inRange<uint64_t>(1, 1u << 20);
  const auto policy =
      *rc::gen::element(engine::OrderingPolicy::kWritethrough, engine::OrderingPolicy::kOrdered,
                        engine::OrderingPolicy::kLazy, engine::OrderingPolicy::kExtent,
                        engine::OrderingPolicy::kJournal, engine::OrderingPolicy::kUnsafe);
  GeneratedCase c = GenerateCase(seed, 0, policy);
  // A bug switch half the time: crash states a safe engine never leaves.
  const auto bugs = engine::KnownBugs();
  std::string bug = "none";
  if (*rc::gen::arbitrary<bool>()) {
    const engine::KnownBug& known = bugs[*rc::gen::inRange<size_t>(0, bugs.size())];
    bug = known.name;
    c.run.open.faults.*known.field = true;
  }
  auto run = RunWorkload(c.workload, c.run);
  RC_PRE(run.ok());  // a case the engine refuses under this policy (amend under the journal)
  const std::string what = "random:" + std::to_string(seed) + " --policy " +
                           engine::PolicyName(policy) + " --bug " + bug + " (" + c.features + ")";
  Tally tally;
  for (const char* spec :
       {"drop-one", "epochs", "bounded-ends:2", "random:5:150", "tear-one", "data:4096"})
    ExpectSameVerdicts(*run, spec, what, tally);
  RC_CLASSIFY(tally.recoveries < tally.states, "fewer recoveries than states");
}

// The same on the built-in workloads whose states the default suite checks
// most, under the policies and bugs that corrupt them.
TEST(Dedup, BuiltinWorkloadsUnderUnsafeAndLazyGetTheFullVerdicts) {
  for (const char* name : {"default", "2010-dangling-l2", "free-reuse", "stale-reuse", "backing",
                           "snapshots", "bitmaps", "subclusters", "compressed", "data-file",
                           "refcount-growth", "commit", "rebase"}) {
    auto workload = BuiltinWorkload(name);
    ASSERT_TRUE(workload.ok()) << name;
    for (auto policy : {engine::OrderingPolicy::kUnsafe, engine::OrderingPolicy::kLazy}) {
      RunOptions options;
      options.open.policy = policy;
      auto run = RunWorkload(*workload, options);
      ASSERT_TRUE(run.ok()) << name;
      const GuestOracle oracle(*run);
      StateDeduper deduper(*run, oracle, {});
      auto enumerator =
          sim::CrashEnumerator::Create(*run->timeline, *sim::ParseEnumeratorSpec("drop-one"));
      sim::CrashState state;
      uint64_t states = 0;
      for (; states < 400 && enumerator->Next(&state); ++states) {
        const StateResult full = RecoverState(*run, oracle, enumerator->point(), state, {});
        const StateResult& dedup = deduper.Recover(enumerator->point(), state);
        ASSERT_EQ(full.verdict, dedup.verdict)
            << name << " " << engine::PolicyName(policy) << " " << sim::FormatCrashStateId(state);
        ASSERT_EQ(Invariants(full), Invariants(dedup))
            << name << " " << engine::PolicyName(policy) << " " << sim::FormatCrashStateId(state);
      }
    }
  }
}

// The data pass (the suite's data:<limit> cells): under the unsafe policy an
// L2 entry lands before its data, and every combination of the data sectors
// under it is judged by a few recoveries; under ordered the data is durable
// before its entry is written, and the same enumerator finds nothing.
TEST(Dedup, TheDataPassJudgesEveryDataCombinationWithFewRecoveries) {
  ExploreConfig config;
  config.workload = *BuiltinWorkload("default");
  config.enumerator = *sim::ParseEnumeratorSpec("data:65536");
  config.run.open.policy = engine::OrderingPolicy::kUnsafe;
  auto unsafe = Explore(config);
  ASSERT_TRUE(unsafe.ok());
  EXPECT_GT(unsafe->states_checked, 100000u);
  EXPECT_LT(unsafe->recoveries_run * 1000, unsafe->states_checked);
  EXPECT_GT(unsafe->violations_by_invariant["I5"], 0u);
  config.run.open.policy = engine::OrderingPolicy::kOrdered;
  auto ordered = Explore(config);
  ASSERT_TRUE(ordered.ok());
  EXPECT_GT(ordered->states_checked, 1000u);
  EXPECT_EQ(ordered->violating_states, 0u);
}

// The point of it: refcount-growth's exhaustive states differ mostly in data
// sectors, so a handful of recoveries covers them.
TEST(Dedup, ExploreCoversManyStatesPerRecovery) {
  ExploreConfig config;
  config.workload = *BuiltinWorkload("refcount-growth");
  config.enumerator = *sim::ParseEnumeratorSpec("exhaustive:100000000");
  config.states_max = 20000;
  auto report = Explore(config);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->states_checked, 20000u);
  EXPECT_LT(report->recoveries_run * 20, report->states_checked);
  config.dedup = false;
  config.states_max = 300;
  auto full = Explore(config);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->recoveries_run, full->states_checked);
}

}  // namespace
}  // namespace qcrash::properties
