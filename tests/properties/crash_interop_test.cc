// I9: for the policies that write plain qcow2, `qemu-img check` classifies a
// crash image as qcrash does (clean, leaks only, corrupt) with the same
// counts; and the explorer's command line keeps its contract: exit codes,
// reproducers qemu-img can open, `replay`, and --jobs N reporting exactly
// what one process reports.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/bug_catalogue.h"
#include "engine/check.h"
#include "engine/file_device.h"
#include "properties/explorer.h"
#include "sim/crash_view.h"
#include "tests/interop/interop_util.h"

namespace qcrash::properties {
namespace {

using interop::RunResult;
using interop::ScratchDir;

struct Classified {
  std::string verdict;  // clean, leaks, corrupt
  uint64_t leaks = 0;
  uint64_t corruptions = 0;
};

Classified FromCounts(uint64_t leaks, uint64_t corruptions) {
  return {corruptions ? "corrupt" : leaks ? "leaks" : "clean", leaks, corruptions};
}

// Every state of `enumerator` (at most `states_max`) of a workload under a
// policy: the raw crash image goes to a file; both tools check it.
void CompareWithQemu(const std::string& workload, engine::OrderingPolicy policy,
                     const std::string& enumerator, uint64_t states_max, uint64_t* compared,
                     uint64_t* corrupt_seen) {
  ScratchDir dir;
  RunOptions options;
  options.open.policy = policy;
  auto run = RunWorkload(*BuiltinWorkload(workload), options);
  ASSERT_TRUE(run.ok());
  auto states = sim::CrashEnumerator::Create(*run->timeline, *sim::ParseEnumeratorSpec(enumerator));
  sim::CrashState state;
  for (uint64_t n = 0; n < states_max && states->Next(&state); ++n) {
    auto view = sim::CrashTimeline::BuildView(states->point(), state);
    ASSERT_TRUE(view.ok());
    auto ours = engine::CheckImage(**view, {engine::RepairMode::kNone});
    ASSERT_TRUE(ours.ok());
    std::vector<uint8_t> bytes((*view)->SizeBytes());
    ASSERT_TRUE((*view)->Read(0, bytes).ok());
    interop::WriteFileBytes(dir.File("crash.qcow2"), std::string(bytes.begin(), bytes.end()));
    const RunResult qemu = dir.Run("qemu-img check -U --output=json crash.qcow2");
    const auto json = nlohmann::json::parse(qemu.out, nullptr, false);
    ASSERT_FALSE(json.is_discarded()) << qemu.out << qemu.err;
    const Classified theirs = FromCounts(json.value("leaks", 0u), json.value("corruptions", 0u));
    const Classified mine = FromCounts(ours->leaks, ours->corruptions);
    EXPECT_EQ(mine.verdict, theirs.verdict) << workload << " " << sim::FormatCrashStateId(state);
    EXPECT_EQ(mine.leaks, theirs.leaks) << workload << " " << sim::FormatCrashStateId(state);
    EXPECT_EQ(mine.corruptions, theirs.corruptions)
        << workload << " " << sim::FormatCrashStateId(state);
    ++*compared;
    if (mine.corruptions) ++*corrupt_seen;
  }
}

TEST(I9, QemuImgCheckClassifiesCrashImagesAsWeDo) {
  uint64_t compared = 0, corrupt = 0;
  for (auto policy : {engine::OrderingPolicy::kWritethrough, engine::OrderingPolicy::kOrdered,
                      engine::OrderingPolicy::kExtent}) {
    CompareWithQemu("default", policy, "drop-one", 40, &compared, &corrupt);
    CompareWithQemu("refcount-growth", policy, "prefix", 30, &compared, &corrupt);
  }
  // The unsafe policy provides corrupt images, so the comparison covers them too.
  CompareWithQemu("default", engine::OrderingPolicy::kUnsafe, "prefix", 40, &compared, &corrupt);
  CompareWithQemu("2010-dangling-l2", engine::OrderingPolicy::kUnsafe, "drop-one", 40, &compared,
                  &corrupt);
  EXPECT_GT(compared, 250u);
  EXPECT_GT(corrupt, 5u);
}

nlohmann::json ReadJson(const std::string& path) {
  return nlohmann::json::parse(interop::ReadFileBytes(path), nullptr, false);
}

TEST(ExploreCli, ExitCodesReproducersReplayAndJobs) {
  ScratchDir dir;
  RunResult clean =
      dir.Qcrash("explore --workload builtin:default --enumerator drop-one --report clean.json");
  EXPECT_EQ(clean.exit_code, 0) << clean.out << clean.err;
  const nlohmann::json report = ReadJson(dir.File("clean.json"));
  for (const char* field : {"crash_points", "states_checked", "states_per_second", "verdicts",
                            "flushes_per_guest_write", "violations"}) {
    EXPECT_TRUE(report.contains(field)) << field;
  }
  EXPECT_EQ(dir.Qcrash("explore --policy nonsense").exit_code, 2);
  EXPECT_EQ(dir.Qcrash("explore --workload missing.json").exit_code, 2);
  // A workload file with a field of the wrong type is one line naming the file, exit 2.
  interop::WriteFileBytes(dir.File("typed.json"),
                          "{\"name\": 5, \"image\": {\"size\": 1048576}, \"ops\": []}");
  const RunResult typed = dir.Qcrash("explore --workload typed.json");
  EXPECT_EQ(typed.exit_code, 2) << typed.err;
  EXPECT_EQ(typed.err.rfind("qcrash: typed.json: ", 0), 0u) << typed.err;
  EXPECT_EQ(std::count(typed.err.begin(), typed.err.end(), '\n'), 1) << typed.err;
  // Bad --shard and --jobs values are refused with the user's own text.
  for (const std::string bad : {"--shard 2/2", "--shard abc", "--shard 1/", "--shard -1/2",
                                "--shard 0/0", "--jobs 0", "--jobs 2.5", "--jobs 65"}) {
    const RunResult refused = dir.Qcrash("explore " + bad);
    EXPECT_EQ(refused.exit_code, 2) << bad;
    EXPECT_NE(refused.err.find("'" + bad.substr(bad.find(' ') + 1) + "'"), std::string::npos)
        << bad << ": " << refused.err;
  }
  // The policy list of an unknown policy names every policy, journal included.
  EXPECT_NE(dir.Qcrash("explore --policy nonsense").err.find("journal"), std::string::npos);
  // Shards 0/2 and 1/2 are disjoint and cover the whole enumeration.
  ASSERT_EQ(dir.Qcrash("explore --workload builtin:default --enumerator drop-one --report all.json")
                .exit_code,
            0);
  ASSERT_EQ(dir.Qcrash("explore --workload builtin:default --enumerator drop-one --shard 0/2 "
                       "--report s0.json")
                .exit_code,
            0);
  ASSERT_EQ(dir.Qcrash("explore --workload builtin:default --enumerator drop-one --shard 1/2 "
                       "--report s1.json")
                .exit_code,
            0);
  const uint64_t all = ReadJson(dir.File("all.json"))["states_checked"];
  const uint64_t s0 = ReadJson(dir.File("s0.json"))["states_checked"];
  const uint64_t s1 = ReadJson(dir.File("s1.json"))["states_checked"];
  EXPECT_EQ(s0 + s1, all);
  EXPECT_GT(s0, 0u);
  EXPECT_GT(s1, 0u);

  RunResult broken = dir.Qcrash(
      "explore --workload builtin:default --policy unsafe --enumerator drop-one --report one.json "
      "--jobs 1");
  EXPECT_EQ(broken.exit_code, 1) << broken.out << broken.err;
  const nlohmann::json one = ReadJson(dir.File("one.json"));
  ASSERT_FALSE(one["violations"].empty());
  const std::string repro = one["violations"][0]["reproducer"];
  EXPECT_EQ(dir.Run("qemu-img info " + repro + "/image.qcow2 >/dev/null").exit_code, 0);
  EXPECT_EQ(dir.Qcrash("replay one.json#0").exit_code, 1) << "the minimized state must reproduce";

  RunResult two = dir.Qcrash(
      "explore --workload builtin:default --policy unsafe --enumerator drop-one --report two.json "
      "--jobs 2");
  EXPECT_EQ(two.exit_code, 1);
  const nlohmann::json jobs = ReadJson(dir.File("two.json"));
  for (const char* field : {"crash_points", "states_checked", "states_total", "verdicts",
                            "violations_by_invariant", "violating_states", "device_flushes"}) {
    EXPECT_EQ(one[field], jobs[field]) << field;
  }
  ASSERT_EQ(one["violations"].size(), jobs["violations"].size());
  for (size_t i = 0; i < one["violations"].size(); ++i) {
    EXPECT_EQ(one["violations"][i]["state_id"], jobs["violations"][i]["state_id"]);
    EXPECT_EQ(one["violations"][i]["minimized"], jobs["violations"][i]["minimized"]);
  }
}

// The default exploration is the suite: every built-in workload and
// generated ones under every safe policy, clean on the engine as it is, and
// every catalogue bug switched on with no other option is caught, with a
// reproducer that replays.
TEST(ExploreCli, TheSuiteIsCleanAndListsTheCatalogue) {
  ScratchDir dir;
  const RunResult clean = dir.Qcrash("explore --quick --generated 2 --report suite.json");
  EXPECT_EQ(clean.exit_code, 0) << clean.out << clean.err;
  const nlohmann::json suite = ReadJson(dir.File("suite.json"));
  EXPECT_TRUE(suite["suite"].get<bool>());
  EXPECT_GE(suite["builtin_workloads"].get<uint64_t>(), 10u);
  EXPECT_EQ(suite["generated_workloads"].get<uint64_t>(), 2u);
  EXPECT_FALSE(suite["budget_exhausted"].get<bool>());
  EXPECT_TRUE(suite["failures"].empty()) << suite["failures"].dump();
  std::set<std::string> policies;
  for (const auto& cell : suite["cells"]) policies.insert(cell["policy"].get<std::string>());
  for (const char* p : {"writethrough", "ordered", "lazy", "extent", "journal", "journal/scan"}) {
    EXPECT_TRUE(policies.count(p)) << p << " missing from the suite";
  }
  EXPECT_NE(dir.Qcrash("explore --enumerator drop-one").exit_code, 0)
      << "--enumerator needs --workload";
  const RunResult listed = dir.Qcrash("explore --list-bugs --output=json");
  ASSERT_EQ(listed.exit_code, 0);
  const nlohmann::json bugs = nlohmann::json::parse(listed.out);
  ASSERT_EQ(bugs.size(), engine::KnownBugs().size());
}

// Each catalogue switch, one test apiece (ctest runs them side by side):
// the default suite, as a user runs it, catches it and the first
// reproducer replays the violation.
class CatalogueBug : public ::testing::TestWithParam<std::string> {};

TEST_P(CatalogueBug, TheDefaultSuiteCatchesItAndTheReproducerReplays) {
  ScratchDir dir;
  const std::string name = GetParam();
  const RunResult caught =
      dir.Qcrash("explore --quick --generated 1 --bug " + name + " --report " + name + ".json");
  EXPECT_EQ(caught.exit_code, 1) << name << " was not caught:\n" << caught.out;
  const nlohmann::json report = ReadJson(dir.File(name + ".json"));
  ASSERT_FALSE(report["failures"].empty()) << name;
  bool replayed = false;
  for (const auto& failure : report["failures"]) {
    if (!failure.contains("reproducer")) continue;
    replayed = dir.Qcrash("replay " + failure["reproducer"].get<std::string>()).exit_code == 1;
    break;
  }
  EXPECT_TRUE(replayed) << name << ": the first reproducer does not replay";
}

std::vector<std::string> CatalogueNames() {
  std::vector<std::string> names;
  for (const engine::KnownBug& bug : engine::KnownBugs()) names.emplace_back(bug.name);
  return names;
}

INSTANTIATE_TEST_SUITE_P(Switches, CatalogueBug, ::testing::ValuesIn(CatalogueNames()),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           std::string id = param.param;
                           std::replace(id.begin(), id.end(), '-', '_');
                           return id;
                         });

}  // namespace
}  // namespace qcrash::properties
