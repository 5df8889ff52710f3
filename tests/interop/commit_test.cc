// Proves `qcrash commit` against `qemu-img commit`: a qcow2 overlay written
// by qemu-io is committed by each tool on its own copy of the chain, onto a
// raw and onto a qcow2 base, with -d and with -b over a three-image chain;
// qemu-img check is clean on every image qcrash wrote, the bases compare
// identical (qemu-img compare), the emptied top maps nothing of its own, as
// after qemu-img's commit, and a kept top is untouched; an image qemu-img
// committed reads, maps and checks the same in qcrash; a commit that cannot
// run is one clear error and writes nothing.
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

constexpr uint64_t kSize = 4 << 20;

struct Variant {
  const char* name;
  const char* base_format;  // "raw" or "qcow2"
  const char* commit_args;  // more qcrash/qemu-img commit arguments
  bool three_images;        // base <- mid <- top, committed with -b base
};

constexpr Variant kVariants[] = {
    {"raw-base", "raw", "", false},          {"qcow2-base", "qcow2", "", false},
    {"raw-base-keep", "raw", "-d", false},   {"qcow2-base-keep", "qcow2", "-d", false},
    {"chain-b", "raw", "-b base.img", true}, {"chain-b-qcow2", "qcow2", "-b base.img", true},
};

class CommitInterop : public testing::TestWithParam<Variant> {};

// Builds the chain in `sub` of dir with QEMU's tools: a base full of data,
// (a mid image with a few clusters,) and a top written by MixedWorkload.
void MakeChain(const ScratchDir& dir, const std::string& sub, const Variant& v) {
  ASSERT_EQ(dir.Run("mkdir -p " + sub).exit_code, 0);
  const std::string in = "cd " + sub + " && ";
  ASSERT_EQ(
      dir.Run(in + "qemu-img create -q -f " + v.base_format + " base.img " + std::to_string(kSize))
          .exit_code,
      0);
  ASSERT_EQ(dir.Run(in + "qemu-io -f " + v.base_format + " -c 'write -P 0x5a 0 " +
                    std::to_string(kSize) + "' base.img >/dev/null")
                .exit_code,
            0);
  if (std::string(v.base_format) == "qcow2") {
    // A persistent bitmap in the base: the base is opened read-write, and
    // must be closed so (no bitmap left in_use).
    ASSERT_EQ(dir.Run(in + "qemu-img bitmap --add base.img b0").exit_code, 0);
  }
  std::string below = "base.img -F " + std::string(v.base_format);
  if (v.three_images) {
    ASSERT_EQ(dir.Run(in + "qemu-img create -q -f qcow2 -b " + below + " mid.qcow2").exit_code, 0);
    ASSERT_EQ(dir.Run(in + "qemu-io -c 'write -P 0x66 64k 128k' -c 'write -z 1M 64k' mid.qcow2 "
                           ">/dev/null")
                  .exit_code,
              0);
    below = "mid.qcow2 -F qcow2";
  }
  ASSERT_EQ(
      dir.Run(in + "qemu-img create -q -f qcow2 -o cluster_size=4k -b " + below + " top.qcow2")
          .exit_code,
      0);
  ASSERT_EQ(dir.Run(in + "qemu-io " + IoArgs(MixedWorkload(kSize, 4096)) + " top.qcow2 >/dev/null")
                .exit_code,
            0);
}

TEST_P(CommitInterop, QcrashCommitsWhatQemuImgCommits) {
  ScratchDir dir;
  const Variant v = GetParam();
  MakeChain(dir, "ours", v);
  ASSERT_EQ(dir.Run("cp -r ours theirs").exit_code, 0);
  const std::string args = std::string(v.commit_args) + " top.qcow2";
  const RunResult before_map = dir.Run("cd ours && qemu-img map --output=json top.qcow2");
  // In the chain's directory, as qemu-img runs: -b names the base as the
  // chain does.
  const RunResult ours = dir.Run("cd ours && " + QcrashPath() + " commit " + args);
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  const RunResult theirs = dir.Run("cd theirs && qemu-img commit " + args);
  ASSERT_EQ(theirs.exit_code, 0) << theirs.err;
  EXPECT_EQ(ours.out, theirs.out);
  EXPECT_EQ(ours.out, "Image committed.\n");
  // Every image qcrash wrote passes qemu-img check.
  for (const char* image : {"top.qcow2", "mid.qcow2", "base.img"}) {
    if (std::string(image) == "mid.qcow2" && !v.three_images) continue;
    if (std::string(image) == "base.img" && std::string(v.base_format) == "raw") continue;
    const RunResult check = dir.Run(std::string("qemu-img check ours/") + image);
    EXPECT_EQ(check.exit_code, 0) << image << ": " << check.out << check.err;
  }
  if (std::string(v.base_format) == "qcow2") {
    const RunResult info = dir.Run("qemu-img info ours/base.img");
    EXPECT_NE(info.out.find("name: b0"), std::string::npos) << info.out;
    EXPECT_EQ(info.out.find("in-use"), std::string::npos) << info.out;
  }
  // The bases hold the same guest content, and so do the tops.
  const std::string fmt = std::string(" -f ") + v.base_format + " -F " + v.base_format;
  const RunResult bases = dir.Run("qemu-img compare" + fmt + " ours/base.img theirs/base.img");
  EXPECT_EQ(bases.exit_code, 0) << bases.out << bases.err;
  const RunResult tops = dir.Run("qemu-img compare ours/top.qcow2 theirs/top.qcow2");
  EXPECT_EQ(tops.exit_code, 0) << tops.out << tops.err;
  const RunResult our_map = dir.Run("cd ours && qemu-img map --output=json top.qcow2");
  const RunResult their_map = dir.Run("cd theirs && qemu-img map --output=json top.qcow2");
  ASSERT_EQ(our_map.exit_code, 0);
  const bool emptied = std::string(v.commit_args).empty();
  if (emptied) {
    // Nothing of the top's own: every range reads from below, as after
    // qemu-img's make_empty.
    EXPECT_EQ(their_map.out.find("\"depth\": 0"), std::string::npos) << their_map.out;
    EXPECT_EQ(our_map.out.find("\"depth\": 0"), std::string::npos) << our_map.out;
    if (std::string(v.base_format) == "raw") {
      EXPECT_EQ(our_map.out, their_map.out);
    }
  } else {
    // -d (and -b, which implies it): the top is as it was.
    EXPECT_EQ(our_map.out, before_map.out);
    EXPECT_EQ(their_map.out, before_map.out);
  }
}

// The other direction: a chain qemu-img committed reads, maps and checks
// the same in qcrash as in QEMU.
TEST_P(CommitInterop, AnImageQemuImgCommittedReadsTheSameInQcrash) {
  ScratchDir dir;
  const Variant v = GetParam();
  MakeChain(dir, "theirs", v);
  ASSERT_EQ(dir.Run("cd theirs && qemu-img commit -q " + std::string(v.commit_args) + " top.qcow2")
                .exit_code,
            0);
  ASSERT_EQ(dir.Qcrash("convert -O raw theirs/top.qcow2 ours.raw").exit_code, 0);
  ASSERT_EQ(dir.Run("qemu-img convert -O raw theirs/top.qcow2 qemu.raw").exit_code, 0);
  EXPECT_EQ(
      FirstDifference(ReadFileBytes(dir.File("ours.raw")), ReadFileBytes(dir.File("qemu.raw"))),
      "");
  for (const char* command : {"map", "check"}) {
    const RunResult ours = dir.Qcrash(std::string(command) + " theirs/top.qcow2");
    const RunResult qemu = dir.Run(std::string("qemu-img ") + command + " theirs/top.qcow2");
    EXPECT_EQ(ours.exit_code, qemu.exit_code) << command << ": " << ours.err;
    EXPECT_EQ(ours.out, qemu.out) << command;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, CommitInterop, testing::ValuesIn(kVariants),
                         [](const testing::TestParamInfo<Variant>& param) {
                           std::string name = param.param.name;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

TEST(CommitInteropErrors, ACommitThatCannotRunIsOneLineAndWritesNothing) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 solo.qcow2 1M").exit_code, 0);
  ASSERT_EQ(dir.Run("qemu-io -c 'write -P 1 0 64k' solo.qcow2 >/dev/null").exit_code, 0);
  const std::string solo = ReadFileBytes(dir.File("solo.qcow2"));
  const RunResult no_backing = dir.Qcrash("commit solo.qcow2");
  EXPECT_EQ(no_backing.exit_code, 1);
  EXPECT_NE(no_backing.err.find("Image does not have a backing file"), std::string::npos)
      << no_backing.err;
  EXPECT_EQ(std::count(no_backing.err.begin(), no_backing.err.end(), '\n'), 1) << no_backing.err;
  EXPECT_EQ(ReadFileBytes(dir.File("solo.qcow2")), solo);
  // A base not in the chain: qemu-img's message, nothing written.
  ASSERT_EQ(dir.Run("qemu-img create -q -f raw base.raw 1M").exit_code, 0);
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2").exit_code, 0);
  ASSERT_EQ(dir.Run("qemu-io -c 'write -P 2 0 64k' top.qcow2 >/dev/null").exit_code, 0);
  const std::string top = ReadFileBytes(dir.File("top.qcow2"));
  const std::string base = ReadFileBytes(dir.File("base.raw"));
  const RunResult not_found = dir.Qcrash("commit -b elsewhere.raw top.qcow2");
  EXPECT_EQ(not_found.exit_code, 1);
  EXPECT_NE(not_found.err.find("Did not find 'elsewhere.raw' in the backing chain of 'top.qcow2'"),
            std::string::npos)
      << not_found.err;
  const RunResult raw = dir.Qcrash("commit base.raw");
  EXPECT_EQ(raw.exit_code, 1);
  const RunResult no_file = dir.Qcrash("commit");
  EXPECT_EQ(no_file.exit_code, 1);
  EXPECT_NE(no_file.err.find("Expecting one image file name"), std::string::npos);
  EXPECT_EQ(ReadFileBytes(dir.File("top.qcow2")), top);
  EXPECT_EQ(ReadFileBytes(dir.File("base.raw")), base);
  // -q prints nothing; the top then reads the base.
  const RunResult quiet = dir.Qcrash("commit -q top.qcow2");
  EXPECT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.out, "");
  EXPECT_EQ(dir.Run("qemu-img compare -F raw top.qcow2 base.raw").exit_code, 0);
}

}  // namespace
}  // namespace qcrash::interop
