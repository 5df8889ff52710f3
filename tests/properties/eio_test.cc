// The eio pass (properties/eio.h, invariant I13): each device request of a
// workload fails once in turn; the engine must report it to the guest
// operation, and the image left after the close must recover as a crash
// image does. The failing side is the catalogue's failed-write-kept-clean
// switch (explorer_property_test.cc) and the journal open below.
#include "properties/eio.h"

#include <gtest/gtest.h>

#include "engine/bug_catalogue.h"
#include "properties/explorer.h"
#include "properties/generate.h"
#include "properties/workload.h"

namespace qcrash::properties {
namespace {

TEST(IoErrorCase, StateIdsRoundTripAndBadOnesAreRefused) {
  for (const IoErrorCase c :
       {IoErrorCase{sim::IoOp::kRead, 1}, IoErrorCase{sim::IoOp::kWrite, 12},
        IoErrorCase{sim::IoOp::kFlush, 3}, IoErrorCase{sim::IoOp::kRead, 2, true}}) {
    const std::string id = FormatIoErrorCase(c);
    EXPECT_TRUE(IsIoErrorStateId(id));
    auto parsed = ParseIoErrorCase(id);
    ASSERT_TRUE(parsed.ok()) << id;
    EXPECT_EQ(parsed->op, c.op);
    EXPECT_EQ(parsed->nth, c.nth);
    EXPECT_EQ(parsed->backing, c.backing);
  }
  EXPECT_EQ(FormatIoErrorCase({sim::IoOp::kWrite, 12}), "eio:write#12");
  EXPECT_EQ(FormatIoErrorCase({sim::IoOp::kRead, 2, true}), "eio:backing-read#2");
  for (const char* bad : {"eio:", "eio:write", "eio:write#0", "eio:write#x", "eio:trim#1",
                          "eio:write#1x", "p3:1=0"}) {
    EXPECT_FALSE(ParseIoErrorCase(bad).ok()) << bad;
  }
}

// Every request of the clean run is a case, and each one fires.
TEST(IoErrorCase, EveryRequestOfTheRunIsACaseThatFires) {
  RunOptions options;
  options.open.policy = engine::OrderingPolicy::kOrdered;
  auto run = RunWorkload(*BuiltinWorkload("default"), options);
  ASSERT_TRUE(run.ok());
  const std::vector<IoErrorCase> cases = IoErrorCases(*run);
  ASSERT_EQ(cases.size(),
            run->device_requests[0] + run->device_requests[1] + run->device_requests[2]);
  ASSERT_GT(run->device_requests[2], 0u) << "the workload flushes";
  for (const IoErrorCase& c : cases) {
    auto outcome = CheckIoErrorCase(run->workload, options, c);
    ASSERT_TRUE(outcome.ok());
    EXPECT_TRUE(outcome->fired) << FormatIoErrorCase(c);
  }
}

// A copy-on-write reads the backing file: each of those reads is a case,
// each fires, and the engine fails the guest operation that met it (the
// mutant cow-read-error-ignored, which wrote the cluster anyway, was
// missed before these cases existed).
TEST(IoErrorCase, EachBackingFileReadIsACaseTheEngineReports) {
  RunOptions options;
  options.open.policy = engine::OrderingPolicy::kOrdered;
  auto run = RunWorkload(*BuiltinWorkload("backing"), options);
  ASSERT_TRUE(run.ok());
  ASSERT_GT(run->backing_reads, 0u);
  size_t backing_cases = 0;
  for (const IoErrorCase& c : IoErrorCases(*run)) {
    if (!c.backing) continue;
    ++backing_cases;
    auto outcome = CheckIoErrorCase(run->workload, options, c);
    ASSERT_TRUE(outcome.ok());
    EXPECT_TRUE(outcome->fired) << FormatIoErrorCase(c);
    EXPECT_EQ(outcome->result.violations.size(), 0u)
        << FormatIoErrorCase(c) << ": " << outcome->result.violations.front().message;
  }
  EXPECT_EQ(backing_cases, run->backing_reads);
}

// The engine passes under every safe policy. Under the journal this failed
// before the fix in AttachJournal: an EIO reading a clean journal's header
// at open was taken for a header that does not decode, and the journal was
// formatted again with the error swallowed (the open succeeded).
TEST(IoErrorCase, EverySafePolicyReportsEveryErrorAndLeavesLeaksAtMost) {
  for (const engine::OrderingPolicy policy :
       {engine::OrderingPolicy::kWritethrough, engine::OrderingPolicy::kOrdered,
        engine::OrderingPolicy::kLazy, engine::OrderingPolicy::kExtent,
        engine::OrderingPolicy::kJournal}) {
    for (const char* name : {"default", "free-reuse", "reopen", "backing"}) {
      ExploreConfig config;
      config.workload = *BuiltinWorkload(name);
      config.run.open.policy = policy;
      config.run.open.l2_cache_tables = 2;
      config.io_errors = true;
      auto report = Explore(config);
      ASSERT_TRUE(report.ok());
      EXPECT_GT(report->states_checked, 10u);
      EXPECT_EQ(report->states_checked, report->states_total);
      EXPECT_EQ(report->violating_states, 0u)
          << name << " under " << engine::PolicyName(policy) << ": "
          << report->violations.front().state_id << " " << report->violations.front().message;
    }
  }
}

// A journal commit whose flush fails leaves the ring as it was. Before, the
// written but uncommitted transactions kept their sequence numbers, a
// checkpoint in the close's retry named one of them as synced, and the
// image did not open again (generated case 215: I13 in 4 eio states,
// "synced descriptor 7 does not carry synced_seq 180").
TEST(IoErrorCase, AFailedJournalCommitLeavesTheRingAsItWas) {
  const GeneratedCase generated = GenerateCase(215, 0, engine::OrderingPolicy::kJournal);
  ExploreConfig config;
  config.workload = generated.workload;
  config.run = generated.run;
  config.run.open.policy = engine::OrderingPolicy::kJournal;
  config.io_errors = true;
  auto report = Explore(config);
  ASSERT_TRUE(report.ok());
  EXPECT_GT(report->states_checked, 100u);
  EXPECT_EQ(report->violating_states, 0u)
      << report->violations.front().state_id << " " << report->violations.front().message;
}

// A replay of an eio state reruns the case.
TEST(IoErrorCase, ReplayRunsTheCase) {
  RunOptions options;
  options.open.policy = engine::OrderingPolicy::kOrdered;
  ASSERT_TRUE(engine::EnableBug("failed-write-kept-clean", options.open.faults).ok());
  const Workload workload = *BuiltinWorkload("default");
  ExploreConfig config;
  config.workload = workload;
  config.run = options;
  config.io_errors = true;
  config.stop_at_first_violation = true;
  auto report = Explore(config);
  ASSERT_TRUE(report.ok());
  ASSERT_FALSE(report->violations.empty());
  const FoundViolation& v = report->violations.front();
  EXPECT_EQ(v.invariant, "I13");
  auto replayed = ReplayState(workload, options, {}, v.state_id);
  ASSERT_TRUE(replayed.ok());
  ASSERT_FALSE(replayed->violations.empty());
  EXPECT_EQ(replayed->violations.front().message, v.message);
  EXPECT_FALSE(ReplayState(workload, options, {}, "eio:write#100000").ok());
}

}  // namespace
}  // namespace qcrash::properties
