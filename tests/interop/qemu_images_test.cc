// Proves that qcrash reads images made by qemu-img and qemu-io exactly as
// QEMU does (the whole guest view), and that `qcrash map/info` print what
// `qemu-img map/info` print for them, for patterns, zero writes with and
// without unmap, discards, compressed clusters, lazy refcounts, a dirty
// image and backing chains (qcow2 -> qcow2, qcow2 -> raw, relative names).
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

struct QemuImageCase {
  const char* name;
  std::string setup;  // shell commands that build `image` with QEMU's tools
  const char* image;
  bool map_comparable;  // false when qemu-img map depends on host file holes (raw backing)
};

std::string Io(const std::string& file, const std::vector<GuestOp>& ops) {
  return "qemu-io -f qcow2" + IoArgs(ops) + " " + file + " >/dev/null && ";
}

std::vector<QemuImageCase> AllCases() {
  const uint64_t mib = uint64_t{1} << 20;
  std::vector<GuestOp> over_backing = {
      {GuestOp::kWrite, 4096, 8192, 0xa1},  // partial cluster over backing data: COW
      {GuestOp::kZero, 65536, 65536, 0},    // zero over backing data
      {GuestOp::kZeroUnmap, 131072, 65536, 0}, {GuestOp::kDiscard, 196608, 65536, 0},
      {GuestOp::kWrite, 6 * mib, 65536, 0xa2},  // past the end of a shorter backing file
  };
  const std::vector<GuestOp> base_ops = {{GuestOp::kWrite, 0, 512 * 1024, 0xb0},
                                         {GuestOp::kWrite, 3 * mib, 4096, 0xb1}};
  return {
      {"patterns_64k",
       "qemu-img create -q -f qcow2 img.qcow2 8M && " +
           Io("img.qcow2", MixedWorkload(8 * mib, 65536)) + "true",
       "img.qcow2", true},
      {"v2_4k",
       "qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4096 img.qcow2 8M && " +
           Io("img.qcow2", MixedWorkload(8 * mib, 4096)) + "true",
       "img.qcow2", true},
      {"c512_refcount1",
       "qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1 img.qcow2 4M && " +
           Io("img.qcow2", MixedWorkload(4 * mib, 512)) + "true",
       "img.qcow2", true},
      {"c2m_refcount64",
       "qemu-img create -q -f qcow2 -o cluster_size=2M,refcount_bits=64 img.qcow2 64M && " +
           Io("img.qcow2", MixedWorkload(64 * mib, 2 * mib)) + "true",
       "img.qcow2", true},
      {"lazy_refcounts",
       "qemu-img create -q -f qcow2 -o lazy_refcounts=on img.qcow2 8M && " +
           Io("img.qcow2", MixedWorkload(8 * mib, 65536)) + "true",
       "img.qcow2", true},
      {"lazy_dirty",
       "qemu-img create -q -f qcow2 -o lazy_refcounts=on img.qcow2 8M && "
       "(qemu-io -c 'write -P 0x5a 0 128k' -c 'write -P 0x5b 4M 4k' -c abort img.qcow2 "
       ">/dev/null 2>&1; true)",
       "img.qcow2", true},
      {"preallocated_metadata",
       "qemu-img create -q -f qcow2 -o preallocation=metadata img.qcow2 4M && " +
           Io("img.qcow2", MixedWorkload(4 * mib, 65536)) + "true",
       "img.qcow2", true},
      {"preallocated_falloc_v2",
       "qemu-img create -q -f qcow2 -o preallocation=falloc,compat=0.10 img.qcow2 4M && " +
           Io("img.qcow2", MixedWorkload(4 * mib, 65536)) + "true",
       "img.qcow2", true},
      {"compressed",
       "qemu-img create -q -f qcow2 img.qcow2 4M && "
       "qemu-io -c 'write -c -P 0x31 0 64k' -c 'write -c -P 0x32 128k 64k' "
       "-c 'write -P 0x33 192k 4k' img.qcow2 >/dev/null",
       "img.qcow2", true},
      {"compressed_zstd",
       "qemu-img create -q -f qcow2 -o compression_type=zstd,cluster_size=4096 img.qcow2 4M && "
       "qemu-io -c 'write -c -P 0x31 0 64k' -c 'write -c -P 0x32 128k 64k' "
       "-c 'write -P 0x33 192k 4k' -c 'write -P 0x34 8k 1k' -c 'discard 16k 4k' "
       "img.qcow2 >/dev/null",
       "img.qcow2", true},
      {"backing_qcow2",
       "qemu-img create -q -f qcow2 -o cluster_size=4096 base.qcow2 4M && " +
           Io("base.qcow2", base_ops) +
           "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 8M && " +
           Io("top.qcow2", over_backing) + "true",
       "top.qcow2", true},
      {"backing_qcow2_v2",
       "qemu-img create -q -f qcow2 -o compat=0.10 base.qcow2 4M && " + Io("base.qcow2", base_ops) +
           "qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 top.qcow2 8M && " +
           Io("top.qcow2", over_backing) + "true",
       "top.qcow2", true},
      {"backing_raw",
       "qemu-img create -q -f raw base.raw 4M && qemu-io -f raw -c 'write -P 0xb0 0 512k' "
       "-c 'write -P 0xb1 3M 4k' base.raw >/dev/null && "
       "qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2 8M && " +
           Io("top.qcow2", over_backing) + "true",
       "top.qcow2", true},
      {"backing_relative_chain",
       "mkdir -p a sub && qemu-img create -q -f qcow2 a/base.qcow2 4M && " +
           Io("a/base.qcow2", base_ops) +
           "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 a/mid.qcow2 4M && "
           "qemu-io -c 'write -P 0xc1 64k 64k' a/mid.qcow2 >/dev/null && "
           "qemu-img create -q -f qcow2 -b ../a/mid.qcow2 -F qcow2 sub/top.qcow2 8M && " +
           Io("sub/top.qcow2", over_backing) + "true",
       "sub/top.qcow2", true},
      // Snapshots and persistent bitmaps: info lists them as qemu-img does
      // (a name with spaces, a disabled bitmap, writes after a snapshot).
      {"snapshots_bitmaps",
       "qemu-img create -q -f qcow2 img.qcow2 4M && "
       "qemu-io -c 'write -P 0x41 0 64k' img.qcow2 >/dev/null && "
       "qemu-img snapshot -c first img.qcow2 && "
       "qemu-io -c 'write -P 0x42 32k 64k' img.qcow2 >/dev/null && "
       "qemu-img snapshot -c 'second one' img.qcow2 && "
       "qemu-img bitmap --add -g 128k img.qcow2 b1 && qemu-img bitmap --add img.qcow2 b2 && "
       "qemu-img bitmap --disable img.qcow2 b2",
       "img.qcow2", true},
      {"snapshots_v2",
       "qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4096 img.qcow2 4M && "
       "qemu-io -c 'write -P 0x43 0 16k' img.qcow2 >/dev/null && "
       "qemu-img snapshot -c old img.qcow2 && "
       "qemu-io -c 'write -P 0x44 4k 4k' img.qcow2 >/dev/null",
       "img.qcow2", true},
  };
}

std::string CaseName(const ::testing::TestParamInfo<QemuImageCase>& info) {
  return info.param.name;
}
void PrintTo(const QemuImageCase& c, std::ostream* out) { *out << c.name; }

class QemuImages : public ::testing::TestWithParam<QemuImageCase> {};

TEST_P(QemuImages, GuestViewEqualsQemuImgConvert) {
  const QemuImageCase& c = GetParam();
  ScratchDir dir;
  RunResult setup = dir.Run(c.setup);
  ASSERT_EQ(setup.exit_code, 0) << setup.out << setup.err;
  const std::string image = c.image;
  RunResult qemu = dir.Run("qemu-img convert -U -f qcow2 -O raw " + image + " qemu.raw");
  ASSERT_EQ(qemu.exit_code, 0) << qemu.err;
  RunResult own = dir.Qcrash("convert -f qcow2 -O raw " + image + " own.raw");
  ASSERT_EQ(own.exit_code, 0) << own.err;
  EXPECT_EQ(
      FirstDifference(ReadFileBytes(dir.File("own.raw")), ReadFileBytes(dir.File("qemu.raw"))), "");
}

TEST_P(QemuImages, MapOutputEqualsQemuImgMap) {
  const QemuImageCase& c = GetParam();
  if (!c.map_comparable) GTEST_SKIP() << "qemu-img map depends on host-file state here";
  ScratchDir dir;
  // qemu-img map's metadata-preallocation guess reads st_blocks, which moves
  // while delayed allocation settles: sync first so both tools see the same.
  RunResult setup = dir.Run(c.setup + " && sync -f .");
  ASSERT_EQ(setup.exit_code, 0) << setup.out << setup.err;
  const std::string image = c.image;
  for (const char* output : {"json", "human"}) {
    RunResult qemu =
        dir.Run(std::string("qemu-img map -U -f qcow2 --output=") + output + " " + image);
    RunResult own = dir.Qcrash(std::string("map --output=") + output + " " + image);
    EXPECT_EQ(own.exit_code != 0, qemu.exit_code != 0)
        << output << ": " << own.err << " / " << qemu.err;
    EXPECT_EQ(own.out, qemu.out) << "--output=" << output;
  }
}

TEST_P(QemuImages, InfoOutputEqualsQemuImgInfo) {
  const QemuImageCase& c = GetParam();
  ScratchDir dir;
  RunResult setup = dir.Run(c.setup);
  ASSERT_EQ(setup.exit_code, 0) << setup.out << setup.err;
  const std::string image = c.image;
  RunResult qemu = dir.Run("qemu-img info -U -f qcow2 --output=json " + image);
  RunResult own = dir.Qcrash("info --output=json " + image);
  ASSERT_EQ(qemu.exit_code, 0) << qemu.err;
  ASSERT_EQ(own.exit_code, 0) << own.err;
  EXPECT_EQ(nlohmann::json::parse(own.out), nlohmann::json::parse(qemu.out)) << own.out << qemu.out;
  RunResult qemu_human = dir.Run("qemu-img info -U -f qcow2 " + image);
  RunResult own_human = dir.Qcrash("info " + image);
  EXPECT_EQ(own_human.out, qemu_human.out);
}

INSTANTIATE_TEST_SUITE_P(Interop, QemuImages, ::testing::ValuesIn(AllCases()), CaseName);

// `qcrash create` prints qemu-img's line and makes an image whose header
// qemu-img reads as it reads its own; invalid option sets fail in both.
TEST(CreateInterop, FormattingLineAndHeaderMatchQemuImgCreate) {
  const std::vector<std::string> arg_sets = {
      "-f qcow2 x.qcow2 1M",
      "-f qcow2 -o cluster_size=4096,refcount_bits=1 x.qcow2 1G",
      "-f qcow2 -o compat=0.10 x.qcow2 100M",
      "-f qcow2 -o compat=v3,lazy_refcounts=on,preallocation=metadata x.qcow2 16M",
      "-f qcow2 -o preallocation=full,cluster_size=512 x.qcow2 1M",
      "-f qcow2 -b base.qcow2 -F qcow2 x.qcow2",
      "-f qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2 x.qcow2 3M",
      "-f qcow2 -o compression_type=zstd x.qcow2 1M",
      "-f qcow2 -o compression_type=zlib,cluster_size=4096 x.qcow2 1M",
  };
  for (const std::string& args : arg_sets) {
    ScratchDir qemu_dir;
    ScratchDir own_dir;
    for (const ScratchDir* dir : {&qemu_dir, &own_dir}) {
      ASSERT_EQ(dir->Run("qemu-img create -q -f qcow2 base.qcow2 2M").exit_code, 0);
    }
    RunResult qemu = qemu_dir.Run("qemu-img create " + args);
    RunResult own = own_dir.Qcrash("create " + args);
    ASSERT_EQ(qemu.exit_code, 0) << args << qemu.err;
    ASSERT_EQ(own.exit_code, 0) << args << own.err;
    EXPECT_EQ(own.out, qemu.out) << args;
    RunResult check = own_dir.Run("qemu-img check x.qcow2");
    EXPECT_EQ(check.exit_code, 0) << args << check.out;
    auto qemu_info = nlohmann::json::parse(qemu_dir.Run("qemu-img info --output=json x.qcow2").out);
    auto own_info = nlohmann::json::parse(own_dir.Run("qemu-img info --output=json x.qcow2").out);
    qemu_info.erase("actual-size");
    own_info.erase("actual-size");
    EXPECT_EQ(own_info, qemu_info) << args;
  }
  const std::vector<std::string> bad_sets = {
      "-f qcow2 -o compat=0.10,refcount_bits=8 x.qcow2 1M",
      "-f qcow2 -o cluster_size=3000 x.qcow2 1M",
      "-f qcow2 -o compat=0.10,lazy_refcounts=on x.qcow2 1M",
      "-f qcow2 x.qcow2 1x",
      "-f qcow2 -o refcount_bits=3 x.qcow2 1M",
      "-f qcow2 -o compat=0.10,compression_type=zstd x.qcow2 1M",
      "-f qcow2 -o compression_type=lz4 x.qcow2 1M",
      "-f qcow2 -b missing.qcow2 -F qcow2 x.qcow2 1M"};
  for (const std::string& args : bad_sets) {
    ScratchDir qemu_dir;
    ScratchDir own_dir;
    EXPECT_NE(qemu_dir.Run("qemu-img create " + args).exit_code, 0) << args;
    RunResult own = own_dir.Qcrash("create " + args);
    EXPECT_NE(own.exit_code, 0) << args;
    EXPECT_EQ(std::count(own.err.begin(), own.err.end(), '\n'), 1) << args << ": " << own.err;
  }
}

// Drops qemu-io's timing lines, which differ from run to run.
std::string WithoutTimings(const std::string& text) {
  std::string kept;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(at, end - at);
    if (line.find(" ops; ") == std::string::npos) kept += line + "\n";
    at = end + 1;
  }
  return kept;
}

// `qcrash io` reports like qemu-io, including a failed pattern check.
TEST(IoInterop, ReportLinesAndExitCodesMatchQemuIo) {
  const std::vector<std::string> scripts = {
      "-c 'write -P 0xab 0 4k' -c 'write -z 64k 64k' -c 'write -z -u 128k 4k' -c 'discard 192k "
      "64k' "
      "-c 'read -P 0xab 0 4k' -c 'read 0 1M' -c flush",
      "-c 'write 512 1536' -c 'read -P 0xcd 512 1536' -c 'read -P 0xcd 0 4096' -c 'read -P 0 2048 "
      "2048'",
  };
  for (const std::string& script : scripts) {
    ScratchDir dir;
    ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 q.qcow2 1M && cp q.qcow2 o.qcow2").exit_code, 0);
    RunResult qemu = dir.Run("qemu-io " + script + " q.qcow2");
    RunResult own = dir.Qcrash("io " + script + " o.qcow2");
    EXPECT_EQ(own.exit_code, qemu.exit_code) << script << own.err;
    EXPECT_EQ(WithoutTimings(own.out), WithoutTimings(qemu.out)) << script;
    RunResult compare = dir.Run("qemu-img compare q.qcow2 o.qcow2");
    EXPECT_EQ(compare.exit_code, 0) << compare.out;
  }
}

// A shrink drops the tail: over whole clusters ours and QEMU's agree byte
// for byte once the disk grows again (zeroes past the old end). Inside a
// cluster QEMU keeps the old bytes past the new end, and a growth shows them
// again; ours zeroes them (no stale data comes back), and QEMU's tools
// read the zeroes and find the image clean.
TEST(IoInterop, AShrinkDropsTheTailAsQemuDoes) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 q.qcow2 1M && cp q.qcow2 o.qcow2 && "
                    "cp q.qcow2 partial.qcow2")
                .exit_code,
            0);
  const std::string script =
      "-c 'write -P 0x11 0 192k' -c 'write -P 0x22 512k 64k' -c 'truncate 64k' "
      "-c 'truncate 1M' -c 'read -P 0 64k 960k' -c 'read -P 0x11 0 64k'";
  const RunResult qemu = dir.Run("qemu-io " + script + " q.qcow2");
  const RunResult own = dir.Qcrash("io " + script + " o.qcow2");
  EXPECT_EQ(own.exit_code, qemu.exit_code) << own.err;
  EXPECT_EQ(WithoutTimings(own.out), WithoutTimings(qemu.out));
  EXPECT_EQ(dir.Run("qemu-img compare q.qcow2 o.qcow2").exit_code, 0);
  EXPECT_EQ(dir.Run("qemu-img check o.qcow2").exit_code, 0);

  ASSERT_EQ(dir.Qcrash("io -c 'write -P 0x11 0 192k' -c 'truncate 100352' -c 'truncate 1M' "
                       "partial.qcow2")
                .exit_code,
            0);
  const RunResult check = dir.Run("qemu-img check partial.qcow2");
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  const RunResult read =
      dir.Run("qemu-io -c 'read -P 0x11 0 100352' -c 'read -P 0 100352 948224' partial.qcow2");
  EXPECT_EQ(read.out.find("Pattern verification failed"), std::string::npos) << read.out;
}

// A snapshot name is bytes from the image, not necessarily UTF-8. JSON output
// replaces an invalid byte (U+FFFD) rather than ending the process (found in
// the repair fuzzer's corpus: regress-leak-active-LN-7f30cfcc).
TEST(JsonOutput, ASnapshotNameThatIsNotUtf8StillGivesJson) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 s.qcow2 1M && "
                    "qemu-img snapshot -c snapXYZ s.qcow2")
                .exit_code,
            0);
  std::string image = ReadFileBytes(dir.File("s.qcow2"));
  const size_t at = image.find("snapXYZ");
  ASSERT_NE(at, std::string::npos);
  image[at + 4] = '\xff';
  image[at + 5] = '\xc3';
  WriteFileBytes(dir.File("s.qcow2"), image);
  for (const std::string command : {"info --output=json ", "check --output=json "}) {
    const RunResult ours = dir.Qcrash(command + "s.qcow2");
    EXPECT_EQ(ours.exit_code, 0) << command << ours.err;
    EXPECT_TRUE(nlohmann::json::accept(ours.out)) << command << ours.out;
  }
  EXPECT_TRUE(ReadFileBytes(dir.File("s.qcow2")) == image);
}

}  // namespace
}  // namespace qcrash::interop
