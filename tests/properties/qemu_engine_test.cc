// QEMU's own qcow2 driver under the explorer (properties/qemu_engine.h):
// the imported blklogwrites log is the write history qemu-io made, so the
// prefix state at each operation's end is the image qemu-io left there;
// cache=unsafe, which drops every flush, is caught; cache=none is explored
// end to end; a log from a hand-run qemu-io imports with --log.
#include "properties/qemu_engine.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/memory_device.h"
#include "sim/write_log.h"
#include "tests/interop/interop_util.h"

namespace qcrash::properties {
namespace {

using interop::RunResult;
using interop::ScratchDir;

RunOptions QemuOptions(const std::string& cache) {
  RunOptions options;
  auto qemu = std::make_shared<QemuEngineOptions>();
  qemu->cache = cache;
  options.qemu = qemu;
  return options;
}

// The image the imported log rebuilds up to each operation's end equals
// the file qemu-io had written when it answered that operation.
void ExpectPrefixesEqualQemuImages(const std::string& name, const std::string& cache) {
  auto workload = BuiltinWorkload(name);
  ASSERT_TRUE(workload.ok());
  std::vector<std::vector<uint8_t>> after_ops;
  auto run = RunWorkloadOnQemu(*workload, QemuOptions(cache), &after_ops);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  ASSERT_TRUE(run->workload_status.ok()) << run->workload_status.ToString();
  ASSERT_EQ(run->spans.size(), workload->ops.size());
  ASSERT_EQ(after_ops.size(), workload->ops.size());
  EXPECT_GT(run->log->size(), workload->ops.size());
  for (size_t i = 0; i < after_ops.size(); ++i) {
    MemoryDevice device;
    std::vector<uint8_t> initial(run->initial->SizeBytes());
    run->initial->Read(0, initial);
    ASSERT_TRUE(device.Write(0, initial).ok());
    ASSERT_TRUE(sim::ReplayLog(*run->log, run->spans[i].end, device).ok());
    const std::vector<uint8_t>& qemu = after_ops[i];
    // A shrink truncates the file, which blklogwrites does not log: the
    // replay keeps the old tail. Everything up to QEMU's end must match.
    ASSERT_GE(device.SizeBytes(), qemu.size()) << name << " op " << i;
    std::vector<uint8_t> replayed(qemu.size());
    ASSERT_TRUE(device.Read(0, replayed).ok());
    size_t differ = 0;
    while (differ < qemu.size() && replayed[differ] == qemu[differ]) ++differ;
    EXPECT_EQ(differ, qemu.size()) << name << " cache=" << cache << ": after op " << i << " ("
                                   << DescribeOp(workload->ops[i]) << ") the replayed log differs "
                                   << "from qemu-io's image at byte " << differ;
  }
}

TEST(QemuEngine, ThePrefixAtEachOperationIsTheImageQemuIoLeft) {
  ExpectPrefixesEqualQemuImages("default", "writeback");
  ExpectPrefixesEqualQemuImages("reopen", "writeback");
  ExpectPrefixesEqualQemuImages("bytes", "writeback");
  ExpectPrefixesEqualQemuImages("free-reuse", "none");
}

TEST(QemuEngine, CacheUnsafeDropsFlushesAndIsCaught) {
  ScratchDir dir;
  const RunResult r = dir.Qcrash(
      "explore --engine qemu --qemu-cache unsafe --workload builtin:default --enumerator "
      "drop-one --no-minimize --report r.json");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  const auto report = nlohmann::json::parse(interop::ReadFileBytes(dir.File("r.json")));
  EXPECT_EQ(report["engine"], "qemu");
  EXPECT_EQ(report["qemu_cache"], "unsafe");
  EXPECT_TRUE(report["violations_by_invariant"].contains("I4")) << report.dump();
  // QEMU's own check agrees where we found structural damage.
  bool qemu_corrupt = false;
  for (const auto& v : report["violations"]) {
    ASSERT_TRUE(v.contains("qemu_img_check")) << v.dump();
    if (v["invariant"] == "I1") qemu_corrupt |= v["qemu_img_check"]["corruptions"].get<int>() > 0;
  }
  EXPECT_TRUE(qemu_corrupt) << report["violations"].dump();
}

TEST(QemuEngine, CacheNoneIsExploredEndToEnd) {
  ScratchDir dir;
  const RunResult r = dir.Qcrash(
      "explore --engine qemu --qemu-cache none --workload builtin:default --enumerator drop-one "
      "--qemu-check-sample 20 --report r.json");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("engine QEMU "), std::string::npos) << r.out;
  const auto report = nlohmann::json::parse(interop::ReadFileBytes(dir.File("r.json")));
  EXPECT_EQ(report["engine"], "qemu");
  EXPECT_FALSE(report["qemu_version"].get<std::string>().empty());
  EXPECT_GT(report["states_checked"].get<uint64_t>(), 100u);
  EXPECT_EQ(report["violating_states"], 0);
  const auto& sample = report["qemu_img_check_sample"];
  EXPECT_EQ(sample["states"], 20);
  EXPECT_EQ(sample["disagree"], 0) << sample.dump();
}

// The shell command of a hand run: a fresh 4 MiB image (base.qcow2 keeps
// it as it was), then qemu-io -t CACHE with `commands` over blklogwrites,
// logging to log.bin.
std::string HandRunQemuIo(const std::string& cache, const std::string& commands) {
  return "rm -f img.qcow2 log.bin && qemu-img create -q -f qcow2 img.qcow2 4M && "
         "cp img.qcow2 base.qcow2 && : > log.bin && qemu-io -t " +
         cache + " --image-opts " + commands +
         " 'driver=qcow2,file.driver=blklogwrites,file.file.filename=img.qcow2,"
         "file.log.filename=log.bin,file.log-sector-size=512,file.log-super-update-interval=1'";
}

// qemu-io run by hand over blklogwrites: its log and the image it started
// on explore with --log; with cache=unsafe the same commands leave states
// with dangling pointers, and qemu-img check says so too.
TEST(QemuEngine, AHandRunLogImportsWithLogAndBase) {
  ScratchDir dir;
  const std::string commands =
      "-c 'write -P 0xab 0 64k' -c flush -c 'write -P 0xcd 1M 128k' -c 'discard 0 64k' -c flush";
  for (const std::string cache : {"writeback", "unsafe"}) {
    ASSERT_EQ(dir.Run(HandRunQemuIo(cache, commands)).exit_code, 0);
    const RunResult r =
        dir.Qcrash("explore --log log.bin --base base.qcow2 --enumerator drop-one --report r.json");
    const auto report = nlohmann::json::parse(interop::ReadFileBytes(dir.File("r.json")));
    EXPECT_EQ(report["engine"], "log");
    EXPECT_GT(report["log_records"].get<uint64_t>(), 5u);
    EXPECT_GT(report["states_checked"].get<uint64_t>(), 100u);
    if (cache == "writeback") {
      EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    } else {
      EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
      ASSERT_FALSE(report["violations"].empty());
      EXPECT_EQ(report["violations"][0]["invariant"], "I1");
      EXPECT_GT(report["violations"][0]["qemu_img_check"]["corruptions"].get<int>(), 0);
    }
  }
}

// A log with MARK entries (as a harness over Linux's dm-log-writes writes
// them): the marks bound the spans a violation is reported in.
TEST(QemuEngine, MarksInALogNameTheSpanOfAViolation) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run(HandRunQemuIo("unsafe",
                                  "-c 'write -P 0xab 0 64k' -c flush -c 'write -P 0xcd 1M 128k' "
                                  "-c flush"))
                .exit_code,
            0);
  // Re-lays the log with a mark after every entry: "entry-K".
  const RunResult marked = dir.Run(
      "python3 -c \"\n"
      "import struct\n"
      "d = open('log.bin', 'rb').read()\n"
      "magic, version, n, ss = struct.unpack('<QQQI', d[:28])\n"
      "out, at = [], ss\n"
      "for k in range(n):\n"
      "    first, sectors, flags, dl = struct.unpack('<QQQQ', d[at:at + 32])\n"
      "    size = ss + (0 if flags & 12 else sectors * ss)\n"
      "    out.append(d[at:at + size])\n"
      "    name = ('entry-%d' % k).encode()\n"
      "    out.append((struct.pack('<QQQQ', 0, 0, 8, len(name)) + name).ljust(ss, b'\\0'))\n"
      "    at += size\n"
      "head = struct.pack('<QQQI', magic, version, 2 * n, ss).ljust(ss, b'\\0')\n"
      "open('marked.bin', 'wb').write(head + b''.join(out))\n"
      "\"");
  ASSERT_EQ(marked.exit_code, 0) << marked.err;
  const RunResult r = dir.Qcrash(
      "explore --log marked.bin --base base.qcow2 --enumerator drop-one --report r.json");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  const auto report = nlohmann::json::parse(interop::ReadFileBytes(dir.File("r.json")));
  ASSERT_FALSE(report["violations"].empty());
  EXPECT_EQ(report["violations"][0]["op_class"].get<std::string>().rfind("mark entry-", 0), 0u)
      << report["violations"][0].dump();
}

TEST(QemuEngine, ABadLogIsOneLineNamingTheEntryAndOffset) {
  ScratchDir dir;
  ASSERT_EQ(
      dir.Run(HandRunQemuIo("writeback", "-c 'write 0 64k'") + " && head -c 5000 log.bin > cut.bin")
          .exit_code,
      0);
  const RunResult r = dir.Qcrash("explore --log cut.bin --base base.qcow2");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("cut.bin"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("entry 0 at offset 512: truncated"), std::string::npos) << r.err;
  EXPECT_EQ(dir.Qcrash("explore --log cut.bin").exit_code, 2);  // --base is needed
}

}  // namespace
}  // namespace qcrash::properties
