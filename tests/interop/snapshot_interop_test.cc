// Proves that qcrash's internal snapshots agree with QEMU's tools: snapshots
// qemu-img made, applied (`qcrash snapshot -a`) and deleted (`-d`) by
// qcrash, leave images qemu-img check calls clean and qemu-io and qemu-img
// convert read as expected; a snapshot qcrash made reads in qemu-img
// convert -l as the guest's content at its create; `qcrash convert -l`
// copies what `qemu-img convert -l` copies; `qcrash snapshot -l` prints
// qemu-img's table; a missing snapshot gets qemu-img's words and exit code.
#include <gtest/gtest.h>

#include <string>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;

// A 4 MiB guest view: `pattern` over each [offset, offset + length).
struct Fill {
  uint64_t offset, length;
  char pattern;
};
std::string Guest(std::initializer_list<Fill> fills) {
  std::string guest(4 * kMiB, '\0');
  for (const Fill& f : fills) guest.replace(f.offset, f.length, f.length, f.pattern);
  return guest;
}

// qemu-img check is clean and qemu-img convert reads `expected`.
void ExpectQemuReads(const ScratchDir& dir, const std::string& image, const std::string& expected,
                     const std::string& when) {
  const RunResult check = dir.Run("qemu-img check " + image + " 2>&1");
  EXPECT_EQ(check.exit_code, 0) << when << ": " << check.out;
  ASSERT_EQ(dir.Run("rm -f out.raw && qemu-img convert -O raw " + image + " out.raw").exit_code, 0);
  EXPECT_EQ(FirstDifference(ReadFileBytes(dir.File("out.raw")), expected), "") << when;
}

TEST(SnapshotInterop, QemuSnapshotsAppliedAndDeletedByQcrashStayCleanAndRead) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 img.qcow2 4M && "
                    "qemu-io -c 'write -P 0x11 0 128k' img.qcow2 >/dev/null && "
                    "qemu-img snapshot -c one img.qcow2 && "
                    "qemu-io -c 'write -P 0x22 64k 64k' -c 'write -P 0x33 1M 4k' img.qcow2 "
                    ">/dev/null && qemu-img snapshot -c two img.qcow2 && "
                    "qemu-io -c 'write -P 0x44 0 4k' img.qcow2 >/dev/null")
                .exit_code,
            0);
  const std::string one = Guest({{0, 128 * kKiB, 0x11}});
  const std::string two =
      Guest({{0, 64 * kKiB, 0x11}, {64 * kKiB, 64 * kKiB, 0x22}, {kMiB, 4 * kKiB, 0x33}});

  RunResult applied = dir.Qcrash("snapshot -a one img.qcow2");
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  ExpectQemuReads(dir, "img.qcow2", one, "after -a one");
  EXPECT_EQ(dir.Run("qemu-io -r -c 'read -P 0x11 0 128k' -c 'read -P 0 128k 1M' img.qcow2 "
                    "| grep -c 'Pattern verification failed'")
                .out,
            "0\n");
  applied = dir.Qcrash("snapshot -a 2 img.qcow2");  // by id
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  ExpectQemuReads(dir, "img.qcow2", two, "after -a 2");

  ASSERT_EQ(dir.Qcrash("snapshot -d one img.qcow2").exit_code, 0);
  ExpectQemuReads(dir, "img.qcow2", two, "after -d one");
  ASSERT_EQ(dir.Run("rm -f out.raw && qemu-img convert -l snapshot.name=two -O raw img.qcow2 "
                    "out.raw")
                .exit_code,
            0);
  EXPECT_EQ(FirstDifference(ReadFileBytes(dir.File("out.raw")), two), "") << "snapshot two";
  ASSERT_EQ(dir.Qcrash("snapshot -d two img.qcow2").exit_code, 0);
  ExpectQemuReads(dir, "img.qcow2", two, "after -d two");
  EXPECT_EQ(dir.Run("qemu-img snapshot -l img.qcow2").out, "");
  // Alone again: QEMU writes in place and the image stays clean.
  ASSERT_EQ(dir.Run("qemu-io -c 'write -P 0x55 0 4k' img.qcow2 >/dev/null").exit_code, 0);
  ExpectQemuReads(dir, "img.qcow2",
                  Guest({{0, 4 * kKiB, 0x55},
                         {4 * kKiB, 60 * kKiB, 0x11},
                         {64 * kKiB, 64 * kKiB, 0x22},
                         {kMiB, 4 * kKiB, 0x33}}),
                  "after a QEMU write");
}

TEST(SnapshotInterop, AMissingSnapshotGetsQemuImgsWordsAndExitCode) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 img.qcow2 1M").exit_code, 0);
  for (const char* mode : {"-a", "-d"}) {
    const RunResult qemu = dir.Run(std::string("qemu-img snapshot ") + mode + " nope img.qcow2");
    const RunResult own = dir.Qcrash(std::string("snapshot ") + mode + " nope img.qcow2");
    EXPECT_EQ(own.exit_code, qemu.exit_code) << mode;
    ASSERT_EQ(qemu.err.rfind("qemu-img: ", 0), 0u) << qemu.err;
    EXPECT_EQ(own.err, "qcrash: " + qemu.err.substr(10)) << mode;
  }
  const RunResult qemu = dir.Run("qemu-img convert -l snapshot.name=nope -O raw img.qcow2 q.raw");
  const RunResult own = dir.Qcrash("convert -l snapshot.name=nope -O raw img.qcow2 o.raw");
  EXPECT_EQ(own.exit_code, qemu.exit_code);
  EXPECT_EQ(own.err, "qcrash: " + qemu.err.substr(10));
}

TEST(SnapshotInterop, AQcrashSnapshotReadsInQemuAsAtItsCreate) {
  ScratchDir dir;
  ASSERT_EQ(dir.Qcrash("create -q -o cluster_size=4096 img.qcow2 4M").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("io -c 'write -P 0x61 0 64k' -c 'write -P 0x62 2M 8k' img.qcow2").exit_code,
            0);
  ASSERT_EQ(dir.Qcrash("snapshot -c first img.qcow2").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("io -c 'write -P 0x63 4k 8k' -c 'discard 2M 4k' img.qcow2").exit_code, 0);
  const std::string first = Guest({{0, 64 * kKiB, 0x61}, {2 * kMiB, 8 * kKiB, 0x62}});
  ASSERT_EQ(dir.Run("qemu-img convert -l snapshot.name=first -O raw img.qcow2 q.raw").exit_code, 0);
  EXPECT_EQ(FirstDifference(ReadFileBytes(dir.File("q.raw")), first), "");
  EXPECT_EQ(dir.Run("qemu-img check img.qcow2 2>&1").exit_code, 0);
  // qcrash convert -l, in each of qemu-img's spellings, copies the same bytes.
  for (const char* spec : {"snapshot.name=first", "first", "1", "snapshot.id=1",
                           "snapshot.id=1,snapshot.name=first"}) {
    ASSERT_EQ(dir.Run(std::string("rm -f o.raw q.raw && qemu-img convert -l ") + spec +
                      " -O raw img.qcow2 q.raw")
                  .exit_code,
              0)
        << spec;
    const RunResult own = dir.Qcrash(std::string("convert -l ") + spec + " -O raw img.qcow2 o.raw");
    ASSERT_EQ(own.exit_code, 0) << spec << ": " << own.err;
    EXPECT_EQ(FirstDifference(ReadFileBytes(dir.File("o.raw")), ReadFileBytes(dir.File("q.raw"))),
              "")
        << spec;
  }
  // Applied by QEMU, the active state is the snapshot's again.
  ASSERT_EQ(dir.Run("qemu-img snapshot -a first img.qcow2").exit_code, 0);
  ExpectQemuReads(dir, "img.qcow2", first, "after qemu-img snapshot -a");
}

TEST(SnapshotInterop, SnapshotListPrintsQemuImgsTable) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 img.qcow2 1M && "
                    "qemu-img snapshot -c from-qemu img.qcow2")
                .exit_code,
            0);
  ASSERT_EQ(dir.Qcrash("snapshot -c a-rather-long-name-from-qcrash img.qcow2").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("snapshot -c x img.qcow2").exit_code, 0);
  // The date column is local time, as qemu-img prints it: fix the zone.
  const RunResult qemu = dir.Run("TZ=UTC qemu-img snapshot -l img.qcow2");
  const RunResult own = dir.Run("TZ=UTC " + QcrashPath() + " snapshot -l img.qcow2");
  ASSERT_EQ(qemu.exit_code, 0);
  EXPECT_EQ(own.out, qemu.out);
  EXPECT_EQ(own.exit_code, 0);
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 none.qcow2 1M").exit_code, 0);
  EXPECT_EQ(dir.Qcrash("snapshot -l none.qcow2").out,
            dir.Run("qemu-img snapshot -l none.qcow2").out);
}

}  // namespace
}  // namespace qcrash::interop
