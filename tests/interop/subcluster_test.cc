// Proves that qcrash's extended L2 entries (subclusters, incompatible bit
// 4) agree with QEMU's tools: images QEMU wrote read, map, check and print
// in `info` as qemu-img does; images qcrash wrote pass qemu-img check and
// read back in qemu-img as the guest model says; corrupt subcluster bitmaps
// get qemu-img check's lines and exit code; create refuses what qemu-img
// refuses, with its words.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;

// Subcluster-sized and unaligned writes, zero writes and discards over
// 64 KiB clusters of 2 KiB subclusters, then rewrites of what they cleared.
std::vector<GuestOp> SubclusterWorkload() {
  return {
      {GuestOp::kWrite, 0, 6 * kKiB, 0x11},
      {GuestOp::kWrite, 64 * kKiB + 1 * kKiB, 3 * kKiB, 0x22},
      {GuestOp::kZero, 2 * kKiB, 2 * kKiB, 0},
      {GuestOp::kDiscard, 4 * kKiB, 2 * kKiB, 0},
      {GuestOp::kWrite, 3 * kKiB, 512, 0x33},
      {GuestOp::kZeroUnmap, 128 * kKiB, 64 * kKiB, 0},
      {GuestOp::kWrite, 128 * kKiB + 2 * kKiB + 512, 1 * kKiB, 0x44},
      {GuestOp::kZero, 192 * kKiB + 7 * kKiB, 9 * kKiB, 0},
      {GuestOp::kFlush, 0, 0, 0},
      {GuestOp::kWrite, 1 * kMiB - 512, 2 * kKiB, 0x55},
      {GuestOp::kWrite, 3 * kMiB + 100 * 512, 70 * kKiB, 0x66},
  };
}

// Both tools print the same for `what` (a qemu-img subcommand line).
void ExpectSameOutput(const ScratchDir& dir, const std::string& what) {
  const RunResult qemu = dir.Run("qemu-img " + what + " 2>&1");
  const RunResult ours = dir.Qcrash(what + " 2>&1");
  EXPECT_EQ(ours.exit_code, qemu.exit_code) << what;
  EXPECT_EQ(ours.out + ours.err, qemu.out) << what;
}

void ExpectSameContent(const ScratchDir& dir, const std::string& image) {
  ASSERT_EQ(dir.Run("rm -f q.raw c.raw && qemu-img convert -O raw " + image + " q.raw").exit_code,
            0);
  ASSERT_EQ(dir.Qcrash("convert -O raw " + image + " c.raw").exit_code, 0);
  EXPECT_EQ(FirstDifference(ReadFileBytes(dir.File("c.raw")), ReadFileBytes(dir.File("q.raw"))), "")
      << image;
}

TEST(SubclusterInterop, QemuWrittenImagesReadMapAndCheckAsInQemuImg) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 base.qcow2 4M && "
                    "qemu-io -c 'write -P 0x77 0 4M' base.qcow2 >/dev/null")
                .exit_code,
            0);
  for (const std::string& backing : {std::string(), std::string(" -b base.qcow2 -F qcow2")}) {
    SCOPED_TRACE(backing.empty() ? "no backing file" : "over a backing file");
    ASSERT_EQ(dir.Run("rm -f img.qcow2 && qemu-img create -q -f qcow2 -o extended_l2=on" + backing +
                      " img.qcow2 4M && qemu-io " + IoArgs(SubclusterWorkload()) +
                      " img.qcow2 >/dev/null")
                  .exit_code,
              0);
    ExpectSameOutput(dir, "info img.qcow2");
    ExpectSameOutput(dir, "info --output=json img.qcow2");
    ExpectSameOutput(dir, "map --output=json img.qcow2");
    ExpectSameOutput(dir, "map img.qcow2");
    ExpectSameOutput(dir, "check img.qcow2");
    ExpectSameContent(dir, "img.qcow2");
  }
}

TEST(SubclusterInterop, QcrashWrittenImagesPassQemuImgCheckAndReadAsTheModel) {
  ScratchDir dir;
  for (const std::string& cluster : {std::string("16k"), std::string("64k"), std::string("2M")}) {
    SCOPED_TRACE("cluster_size=" + cluster);
    ASSERT_EQ(
        dir.Qcrash("create -q -f qcow2 -o extended_l2=on,cluster_size=" + cluster + " img.qcow2 4M")
            .exit_code,
        0);
    const RunResult info = dir.Run("qemu-img info img.qcow2");
    EXPECT_NE(info.out.find("extended l2: true"), std::string::npos) << info.out;
    // The model reads a discard as zeroes: only discards of whole
    // subclusters do that (a smaller one is left alone, as QEMU leaves any
    // discard smaller than a cluster).
    const uint64_t subcluster = (cluster == "16k"   ? 16 * kKiB
                                 : cluster == "64k" ? 64 * kKiB
                                                    : 2 * kMiB) /
                                32;
    std::vector<GuestOp> ops;
    for (const GuestOp& op : SubclusterWorkload()) {
      if (op.kind != GuestOp::kDiscard || (op.offset | op.length) % subcluster == 0) {
        ops.push_back(op);
      }
    }
    const std::vector<GuestOp> mixed = MixedWorkload(4 * kMiB, subcluster);
    ops.insert(ops.end(), mixed.begin(), mixed.end());
    const RunResult wrote = dir.Qcrash("io " + IoArgs(ops) + " img.qcow2");
    ASSERT_EQ(wrote.exit_code, 0) << wrote.err;
    const RunResult check = dir.Run("qemu-img check img.qcow2 2>&1");
    EXPECT_EQ(check.exit_code, 0) << check.out;
    std::vector<uint8_t> model(4 * kMiB, 0);
    ApplyToModel(ops, model);
    ASSERT_EQ(dir.Run("rm -f q.raw && qemu-img convert -O raw img.qcow2 q.raw").exit_code, 0);
    EXPECT_EQ(
        FirstDifference(ReadFileBytes(dir.File("q.raw")), std::string(model.begin(), model.end())),
        "");
    ExpectSameOutput(dir, "map --output=json img.qcow2");
    ASSERT_EQ(dir.Run("rm -f img.qcow2").exit_code, 0);
  }
}

TEST(SubclusterInterop, WritesOverABackingFileCopyOnlyWhatTheyTouch) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 base.qcow2 4M && "
                    "qemu-io -c 'write -P 0x77 0 4M' base.qcow2 >/dev/null && "
                    "qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=32k "
                    "-b base.qcow2 -F qcow2 img.qcow2 && cp img.qcow2 ref.qcow2")
                .exit_code,
            0);
  // No discard: qcrash discards whole subclusters, QEMU only whole clusters
  // (both leave what a discard may leave; the bytes would differ).
  std::vector<GuestOp> list;
  for (const GuestOp& op : SubclusterWorkload()) {
    if (op.kind != GuestOp::kDiscard) list.push_back(op);
  }
  const std::string ops = IoArgs(list);
  ASSERT_EQ(dir.Qcrash("io " + ops + " img.qcow2").exit_code, 0);
  ASSERT_EQ(dir.Run("qemu-io " + ops + " ref.qcow2 >/dev/null").exit_code, 0);
  EXPECT_EQ(dir.Run("qemu-img check img.qcow2 2>&1").exit_code, 0);
  EXPECT_EQ(dir.Run("qemu-img compare img.qcow2 ref.qcow2").exit_code, 0);
  // The same subclusters allocated as QEMU allocates them: one 1 KiB write
  // in a fresh cluster maps one subcluster of data, the rest from below.
  EXPECT_EQ(dir.Run("qemu-img map --output=json img.qcow2 | sed 's/, \"offset\": [0-9]*//'").out,
            dir.Run("qemu-img map --output=json ref.qcow2 | sed 's/, \"offset\": [0-9]*//'").out);
}

// Edits L2 entry 1 of the first L2 table: `python_edit` changes its
// descriptor `e` and bitmap word `b`.
void CorruptEntry(const ScratchDir& dir, const std::string& image, const std::string& python_edit) {
  WriteFileBytes(dir.File("corrupt.py"),
                 "import struct\n"
                 "d = bytearray(open('" +
                     image +
                     "', 'rb').read())\n"
                     "l1 = struct.unpack('>Q', d[40:48])[0]\n"
                     "l2 = struct.unpack('>Q', d[l1:l1 + 8])[0] & 0x00FFFFFFFFFFFE00\n"
                     "e, b = struct.unpack('>QQ', d[l2 + 16:l2 + 32])\n" +
                     python_edit +
                     "\n"
                     "d[l2 + 16:l2 + 32] = struct.pack('>QQ', e, b)\n"
                     "open('" +
                     image + "', 'wb').write(d)\n");
  ASSERT_EQ(dir.Run("python3 corrupt.py").exit_code, 0);
}

TEST(SubclusterInterop, CorruptBitmapsGetQemuImgChecksLines) {
  ScratchDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"allocated and zero", "b |= (1 << 32) | 1"},
      {"unallocated with allocation bits", "e = 0; b |= 3"},
      {"compressed with a bitmap", "e = (1 << 62) | 0x50000; b = 5"},
  };
  for (const auto& [name, edit] : cases) {
    SCOPED_TRACE(name);
    ASSERT_EQ(dir.Run("rm -f img.qcow2 && qemu-img create -q -f qcow2 -o extended_l2=on "
                      "img.qcow2 4M && qemu-io -c 'write -P 0x11 0 4k' -c 'write -P 0x22 70k 3k' "
                      "img.qcow2 >/dev/null")
                  .exit_code,
              0);
    CorruptEntry(dir, "img.qcow2", edit);
    ExpectSameOutput(dir, "check img.qcow2");
    // JSON: qemu-img's fields equal (qcrash adds its "findings").
    const RunResult qemu = dir.Run("qemu-img check --output=json img.qcow2 2>/dev/null");
    const RunResult ours = dir.Qcrash("check --output=json img.qcow2 2>/dev/null");
    EXPECT_EQ(ours.exit_code, qemu.exit_code);
    nlohmann::json ours_json = nlohmann::json::parse(ours.out);
    ours_json.erase("findings");
    EXPECT_EQ(ours_json, nlohmann::json::parse(qemu.out));
  }
}

TEST(SubclusterInterop, CreateRefusesWhatQemuImgRefuses) {
  ScratchDir dir;
  for (const std::string& options :
       {std::string("extended_l2=on,cluster_size=8k"), std::string("extended_l2=on,compat=0.10")}) {
    SCOPED_TRACE(options);
    const RunResult qemu = dir.Run("qemu-img create -f qcow2 -o " + options + " q.qcow2 1M 2>&1");
    const RunResult ours = dir.Qcrash("create -f qcow2 -o " + options + " c.qcow2 1M");
    EXPECT_NE(qemu.exit_code, 0);
    EXPECT_EQ(ours.exit_code, qemu.exit_code);
    // "qemu-img: FILE: MESSAGE" against "qcrash: FILE: Invalid argument: MESSAGE".
    const std::string qemu_error = qemu.out.substr(qemu.out.find(".qcow2: ") + 8);
    EXPECT_NE(ours.err.find(qemu_error), std::string::npos) << ours.err << " vs " << qemu_error;
    EXPECT_NE(dir.Run("test -e c.qcow2").exit_code, 0) << "nothing written";
  }
  const RunResult made = dir.Qcrash("create -f qcow2 -o extended_l2=on c.qcow2 1M");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  EXPECT_NE(made.out.find("extended_l2=on"), std::string::npos) << made.out;
  EXPECT_EQ(dir.Run("qemu-img check c.qcow2").exit_code, 0);
}

}  // namespace
}  // namespace qcrash::interop
