// Issue 19 part B on the command line: --junit on explore and report merge,
// --shard from a batch runner's environment, progress (convert -p, check -p)
// and `qcrash report merge`,
// whose merge of three shards must be the unsharded run's report, field by
// field (a run under --policy unsafe, so the violations merge too).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

using nlohmann::json;

constexpr const char* kRun = "explore --workload builtin:default --policy unsafe";

json ReadJson(const ScratchDir& dir, const std::string& name) {
  return json::parse(ReadFileBytes(dir.File(name)), nullptr, false);
}

// tests= and failures= of a JUnit file, and its testcases' failure
// messages, read by Python's XML parser (a malformed file fails here).
std::string JunitSummary(const ScratchDir& dir, const std::string& name) {
  const RunResult r = dir.Run(
      "python3 -c 'import sys, xml.etree.ElementTree as E; s = E.parse(sys.argv[1]).getroot(); "
      "t = s.find(\"testsuite\"); print(s.get(\"tests\"), s.get(\"failures\"), "
      "len(t.findall(\"testcase\")), len(t.findall(\"testcase/failure\")))' " +
      name);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

// Runs qcrash with VARIABLES=... in front (the shell's environment syntax).
RunResult QcrashWithEnv(const ScratchDir& dir, const std::string& env, const std::string& args) {
  return dir.Run(env + " '" + QcrashPath() + "' " + args);
}

TEST(Shards, ThreeShardsMergeIntoTheUnshardedReport) {
  ScratchDir dir;
  for (const std::string enumerator : {"prefix", "drop-one"}) {
    SCOPED_TRACE(enumerator);
    const std::string run = std::string(kRun) + " --enumerator " + enumerator;
    ASSERT_EQ(dir.Qcrash(run + " --report all.json").exit_code, 1);
    for (int i = 0; i < 3; ++i) {
      const std::string n = std::to_string(i);
      ASSERT_EQ(dir.Qcrash(run + " --shard " + n + "/3 --report s" + n + ".json").exit_code, 1);
    }
    const RunResult merge =
        dir.Qcrash("report merge s2.json s0.json s1.json -o merged.json --junit merged.xml");
    ASSERT_EQ(merge.exit_code, 1) << merge.err;  // a violation, as the unsharded run's exit
    json all = ReadJson(dir, "all.json"), merged = ReadJson(dir, "merged.json");
    ASSERT_TRUE(all.is_object() && merged.is_object());
    EXPECT_EQ(merged["merged_shards"], 3);
    ASSERT_GT(all["violating_states"].get<uint64_t>(), 0u);
    ASSERT_EQ(all["violations"].size(), merged["violations"].size());
    // Time varies, and each violation's reproducer is its own shard's. The
    // recoveries are work, not states: each shard recovers the metadata
    // states of its own points (properties/dedup.h), so they add up to at
    // least the unsharded run's.
    EXPECT_GE(merged["recoveries_run"], all["recoveries_run"]);
    for (const char* key : {"elapsed_seconds", "states_per_second", "merged_shards",
                            "recoveries_run", "recoveries_per_second"}) {
      all.erase(key);
      merged.erase(key);
    }
    for (size_t i = 0; i < all["violations"].size(); ++i) {
      all["violations"][i].erase("reproducer");
      merged["violations"][i].erase("reproducer");
    }
    for (const auto& [key, value] : all.items()) {
      EXPECT_EQ(merged[key], value) << "field " << key;
    }
    EXPECT_EQ(merged.size(), all.size());
    EXPECT_EQ(JunitSummary(dir, "merged.xml"), "1 1 1 1\n");
  }
}

TEST(Shards, MergeRefusesReportsOfAnotherRunOrAnIncompleteSet) {
  ScratchDir dir;
  for (int i = 0; i < 3; ++i) {
    const std::string n = std::to_string(i);
    ASSERT_EQ(
        dir.Qcrash(std::string(kRun) + " --shard " + n + "/3 --report s" + n + ".json").exit_code,
        1);
  }
  ASSERT_EQ(dir.Qcrash("explore --workload builtin:default --policy lazy --shard 2/3 --report "
                       "lazy.json")
                .exit_code,
            0);
  ASSERT_EQ(dir.Qcrash(std::string(kRun) + " --shard 2/4 --report four.json").exit_code, 1);
  const struct {
    const char* files;
    const char* says;
  } kCases[] = {
      {"s0.json s1.json", "shard 2/3 is missing"},
      {"s0.json s1.json s1.json", "shard 1/3 again"},
      {"s0.json s1.json lazy.json", "lazy.json: policy \"lazy\" differs"},
      {"s0.json s1.json four.json", "four.json: shard 2/4 is not one of 3"},
      {"s0.json s1.json nowhere.json", "nowhere.json"},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.files);
    const RunResult r = dir.Qcrash(std::string("report merge ") + c.files + " -o out.json");
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir.File("out.json")));
  }
  EXPECT_EQ(dir.Qcrash("report merge s0.json").exit_code, 2);  // no -o
}

TEST(Shards, JunitOfAnUnsafeRunHasAFailureWithInvariantStateAndReplay) {
  ScratchDir dir;
  ASSERT_EQ(dir.Qcrash(std::string(kRun) + " --report r.json --junit r.xml").exit_code, 1);
  EXPECT_EQ(JunitSummary(dir, "r.xml"), "1 1 1 1\n");
  const std::string xml = ReadFileBytes(dir.File("r.xml"));
  const json report = ReadJson(dir, "r.json");
  const json& first = report["violations"][0];
  EXPECT_NE(xml.find("<failure message=\"" + first["invariant"].get<std::string>() + " at " +
                     first["state_id"].get<std::string>() + ": "),
            std::string::npos)
      << xml;
  EXPECT_NE(xml.find("replay: qcrash replay r.json#0"), std::string::npos) << xml;
  EXPECT_NE(xml.find("classname=\"default\" name=\"unsafe/prefix\""), std::string::npos) << xml;
  // The replay command the failure names works.
  EXPECT_EQ(dir.Qcrash("replay r.json#0").exit_code, 1);

  ASSERT_EQ(
      dir.Qcrash("explore --workload builtin:default --policy ordered --junit ok.xml").exit_code,
      0);
  EXPECT_EQ(JunitSummary(dir, "ok.xml"), "1 0 1 0\n");
}

TEST(Shards, JunitOfTheSuiteHasATestcasePerCell) {
  ScratchDir dir;
  ASSERT_EQ(dir.Qcrash("explore --quick --generated 1 --policy unsafe --report suite.json --junit "
                       "suite.xml")
                .exit_code,
            1);
  const json suite = ReadJson(dir, "suite.json");
  const size_t cells = suite["cells"].size(), failures = suite["failures"].size();
  ASSERT_GT(failures, 0u);
  EXPECT_EQ(JunitSummary(dir, "suite.xml"), std::to_string(cells) + " " + std::to_string(failures) +
                                                " " + std::to_string(cells) + " " +
                                                std::to_string(failures) + "\n");
}

TEST(Shards, ShardFromTheEnvironment) {
  ScratchDir dir;
  const std::string run = "explore --workload builtin:default --policy ordered --report r.json";
  const struct {
    const char* env;
    const char* enumerator;  // "" when refused
    const char* says;
  } kCases[] = {
      {"JOB_COMPLETION_INDEX=1 QCRASH_SHARD_COUNT=3", "prefix@1/3", "from JOB_COMPLETION_INDEX"},
      {"JOB_COMPLETION_INDEX=2 JOB_COMPLETIONS=3", "prefix@2/3", "from JOB_COMPLETION_INDEX"},
      // The Job's own count is taken only when QCRASH_SHARD_COUNT is not set.
      {"JOB_COMPLETION_INDEX=0 QCRASH_SHARD_COUNT=2 JOB_COMPLETIONS=5", "prefix@0/2", ""},
      {"SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=2", "prefix@1/2", "from SLURM_ARRAY_TASK_ID"},
      // --array=1-3: tasks 1, 2, 3 are shards 0, 1, 2.
      {"SLURM_ARRAY_TASK_ID=3 SLURM_ARRAY_TASK_COUNT=3 SLURM_ARRAY_TASK_MIN=1", "prefix@2/3", ""},
      // --array=0-4:2: tasks 0, 2, 4.
      {"SLURM_ARRAY_TASK_ID=4 SLURM_ARRAY_TASK_COUNT=3 SLURM_ARRAY_TASK_MIN=0 "
       "SLURM_ARRAY_TASK_STEP=2",
       "prefix@2/3", ""},
      {"JOB_COMPLETION_INDEX=1", "", "QCRASH_SHARD_COUNT"},
      {"JOB_COMPLETION_INDEX=3 QCRASH_SHARD_COUNT=3", "", "not below QCRASH_SHARD_COUNT 3"},
      {"JOB_COMPLETION_INDEX=-1 QCRASH_SHARD_COUNT=3", "", "bad JOB_COMPLETION_INDEX '-1'"},
      {"JOB_COMPLETION_INDEX=0 QCRASH_SHARD_COUNT=x", "", "bad QCRASH_SHARD_COUNT 'x'"},
      {"SLURM_ARRAY_TASK_ID=1", "", "SLURM_ARRAY_TASK_COUNT"},
      {"SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_TASK_COUNT=3 SLURM_ARRAY_TASK_MIN=1", "",
       "SLURM_ARRAY_TASK_ID 0 is not task 0..2"},
      {"SLURM_ARRAY_TASK_ID=3 SLURM_ARRAY_TASK_COUNT=3", "", "SLURM_ARRAY_TASK_ID 3"},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.env);
    std::filesystem::remove(dir.File("r.json"));
    const RunResult r = QcrashWithEnv(dir, c.env, run);
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
    if (*c.enumerator) {
      EXPECT_EQ(r.exit_code, 0) << r.err;
      EXPECT_EQ(ReadJson(dir, "r.json")["enumerator"], c.enumerator);
    } else {
      EXPECT_EQ(r.exit_code, 2);
      EXPECT_EQ(r.err.rfind("qcrash explore: ", 0), 0u) << r.err;
      EXPECT_FALSE(std::filesystem::exists(dir.File("r.json")));
    }
  }
  // An explicit --shard wins over the environment.
  RunResult r =
      QcrashWithEnv(dir, "JOB_COMPLETION_INDEX=1 QCRASH_SHARD_COUNT=3", run + " --shard 1/2");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadJson(dir, "r.json")["enumerator"], "prefix@1/2");
  // The suite has no shards that add up (it runs to a time budget): refused.
  r = QcrashWithEnv(dir, "SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_TASK_COUNT=2", "explore --quick");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("a shard from SLURM_ARRAY_TASK_ID needs --workload"), std::string::npos)
      << r.err;
}

// qemu-img's "    (12.34/100%)\r" lines, counted (0 when there are none).
int ProgressLines(const std::string& err) {
  int lines = 0;
  for (size_t at = err.find("/100%)\r"); at != std::string::npos; at = err.find("/100%)\r", at + 1))
    ++lines;
  return lines;
}

TEST(Progress, ConvertDashPPrintsProgressOnStderrAndTheImageIsUnchanged) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 src.qcow2 64M && qemu-io -c 'write -P 0x5a 0 24M' "
                    "-c 'write -P 0x11 40M 3M' src.qcow2 >/dev/null")
                .exit_code,
            0);
  for (const std::string extra : {"-O qcow2", "-O raw", "-c -O qcow2"}) {
    SCOPED_TRACE(extra);
    RunResult quiet = dir.Qcrash("convert " + extra + " src.qcow2 plain.img");
    ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
    EXPECT_EQ(quiet.err, "");  // not a terminal, no -p: no progress
    RunResult shown = dir.Qcrash("convert -p " + extra + " src.qcow2 progress.img");
    ASSERT_EQ(shown.exit_code, 0) << shown.err;
    EXPECT_EQ(shown.out, "");
    EXPECT_GE(ProgressLines(shown.err), 3) << shown.err;
    EXPECT_EQ(shown.err.rfind("    (0.00/100%)\r", 0), 0u) << shown.err;
    EXPECT_NE(shown.err.find("    (100.00/100%)\r\n"), std::string::npos) << shown.err;
    const std::string format = extra.substr(extra.size() - 5) == "qcow2" ? "qcow2" : "raw";
    EXPECT_EQ(
        dir.Run("qemu-img compare -f qcow2 -F " + format + " src.qcow2 progress.img").exit_code, 0);
    EXPECT_EQ(dir.Run("cmp plain.img progress.img").exit_code, 0);
    // -q silences -p, as in qemu-img (either order).
    EXPECT_EQ(dir.Qcrash("convert -p -q " + extra + " src.qcow2 q.img").err, "");
    EXPECT_EQ(dir.Qcrash("convert -q -p " + extra + " src.qcow2 q.img").err, "");
  }
}

TEST(Progress, CheckDashPPrintsProgressAndTheSameVerdict) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 -o cluster_size=4k a.qcow2 64M && qemu-io -c "
                    "'write -P 1 0 16M' -c 'write -P 2 20M 8M' a.qcow2 >/dev/null")
                .exit_code,
            0);
  const RunResult plain = dir.Qcrash("check --output=json a.qcow2");
  const RunResult shown = dir.Qcrash("check -p --output=json a.qcow2");
  EXPECT_EQ(plain.exit_code, 0);
  EXPECT_EQ(shown.exit_code, 0);
  EXPECT_EQ(shown.out, plain.out);  // stdout (the JSON) untouched
  EXPECT_EQ(plain.err, "");
  EXPECT_GE(ProgressLines(shown.err), 3) << shown.err;
  EXPECT_NE(shown.err.find("    (100.00/100%)\r\n"), std::string::npos) << shown.err;
}

}  // namespace
}  // namespace qcrash::interop
