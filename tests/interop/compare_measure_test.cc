// qcrash compare and qcrash measure against qemu-img's, output and exit
// code alike, on images both tools made: equal and different contents,
// different sizes, strict mode, raw against qcow2, backing chains; measure
// from --size and from images with data, zero and compressed clusters,
// bitmaps and backing files, for qcow2 and raw output. Also --version and
// options written after the file name.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

// Images for both commands: a (data, zero writes, a compressed cluster, two
// bitmaps), b = a plus one 3-byte change deep inside, a.raw (a's guest view,
// sparse), big (2 MiB, data past 1 MiB), zero-alloc / zero-plain /
// written-zeroes variants, and top over a (a backing chain).
constexpr const char* kMakeImages =
    "qemu-img create -q -f qcow2 -o cluster_size=4k a.qcow2 64M && "
    "qemu-io -c 'write -P 0x11 0 1M' -c 'write -z 2M 1M' -c 'write -P 0x22 5000 100' "
    "-c 'write -c 8M 64k' a.qcow2 >/dev/null && "
    "qemu-img bitmap --add -g 512 a.qcow2 bitmap-with-a-long-name && "
    "qemu-img bitmap --add a.qcow2 b2 && "
    "cp a.qcow2 b.qcow2 && qemu-io -c 'write -P 7 40000003 3' b.qcow2 >/dev/null && "
    "qemu-img convert -O raw a.qcow2 a.raw && "
    "qemu-img create -q -f qcow2 small.qcow2 1M && qemu-img create -q -f qcow2 big.qcow2 2M && "
    "cp big.qcow2 bigdata.qcow2 && qemu-io -c 'write -P 1 1500000 512' bigdata.qcow2 >/dev/null && "
    "cp small.qcow2 zalloc.qcow2 && qemu-io -c 'write -P 1 0 64k' -c 'write -z 0 64k' "
    "zalloc.qcow2 >/dev/null && "
    "cp small.qcow2 zplain.qcow2 && qemu-io -c 'write -z -u 0 64k' zplain.qcow2 >/dev/null && "
    "cp small.qcow2 zdata.qcow2 && qemu-io -c 'write -P 0 0 64k' zdata.qcow2 >/dev/null && "
    "qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 top.qcow2 && "
    "qemu-io -c 'write -P 0x33 30M 100k' top.qcow2 >/dev/null && "
    "qemu-img convert -O qcow2 top.qcow2 flat.qcow2";

class CompareMeasure : public ::testing::Test {
 protected:
  void SetUp() override {
    RunResult made = dir_.Run(kMakeImages);
    ASSERT_EQ(made.exit_code, 0) << made.err;
  }
  ScratchDir dir_;
};

TEST_F(CompareMeasure, CompareSaysWhatQemuImgSays) {
  const std::vector<std::string> cases = {
      "a.qcow2 a.qcow2",
      "a.qcow2 b.qcow2",
      "b.qcow2 a.qcow2",
      "a.qcow2 a.raw",
      "-s a.qcow2 a.raw",
      "-f qcow2 -F raw a.qcow2 a.raw",
      "-f raw a.qcow2 a.qcow2",
      "small.qcow2 big.qcow2",
      "big.qcow2 small.qcow2",
      "small.qcow2 bigdata.qcow2",
      "bigdata.qcow2 small.qcow2",
      "-s small.qcow2 big.qcow2",
      "small.qcow2 zalloc.qcow2",
      "-s small.qcow2 zalloc.qcow2",
      "-s zalloc.qcow2 zplain.qcow2",
      "-s zplain.qcow2 zdata.qcow2",
      "small.qcow2 zdata.qcow2",
      "top.qcow2 flat.qcow2",
      "-s top.qcow2 flat.qcow2",
      "a.qcow2 top.qcow2",
      "-q a.qcow2 b.qcow2",
      "a.qcow2 missing.qcow2",
  };
  for (const std::string& args : cases) {
    const RunResult qemu = dir_.Run("qemu-img compare -U " + args);
    const RunResult own = dir_.Qcrash("compare -U " + args);
    EXPECT_EQ(own.exit_code, qemu.exit_code) << args << "\n" << own.out << own.err;
    EXPECT_EQ(own.out, qemu.out) << args;
  }
  // The ones that must differ do, and name the sector of the change.
  const RunResult differ = dir_.Qcrash("compare a.qcow2 b.qcow2");
  EXPECT_EQ(differ.exit_code, 1);
  EXPECT_EQ(differ.out, "Content mismatch at offset 40000000!\n");
}

TEST_F(CompareMeasure, MeasureEqualsQemuImgJsonAndText) {
  const std::vector<std::string> cases = {
      "--size 1G",
      "--size 0",
      "--size 1000 -o cluster_size=512,refcount_bits=1",
      "--size 2T -o cluster_size=2M",
      "--size 1P",
      "--size 1G -o extended_l2=on",
      "--size 100G -o cluster_size=16k,extended_l2=on",
      "--size 1G -o preallocation=full",
      "--size 1G -o preallocation=metadata",
      "--size 1G -o refcount_bits=64,cluster_size=4k",
      "--size 1G -o compat=0.10",
      "--size 1G -o backing_file=x.qcow2",
      "a.qcow2",
      "a.qcow2 -o cluster_size=512",
      "a.qcow2 -o cluster_size=2M,extended_l2=on",
      "a.qcow2 -o compat=0.10",
      "-f raw a.qcow2",
      "a.raw",
      "top.qcow2",
      "top.qcow2 -o backing_file=a.qcow2",
      "bigdata.qcow2 -o cluster_size=1k",
  };
  for (const std::string& args : cases) {
    for (const char* target : {"qcow2", "raw"}) {
      if (std::string(target) == "raw" && args.find(" -o ") != std::string::npos) continue;
      for (const char* output : {"json", "human"}) {
        const std::string command =
            std::string("measure -U --output=") + output + " -O " + target + " " + args;
        const RunResult qemu = dir_.Run("qemu-img " + command);
        ASSERT_EQ(qemu.exit_code, 0) << command << qemu.err;
        const RunResult own = dir_.Qcrash(command);
        EXPECT_EQ(own.exit_code, 0) << command << own.err;
        EXPECT_EQ(own.out, qemu.out) << command;
      }
    }
  }
}

TEST_F(CompareMeasure, MeasureRefusesWhatQemuImgRefuses) {
  const std::vector<std::string> cases = {
      "-O qcow2",
      "-O qcow2 --size 1G a.qcow2",
      "-O qcow2 --size 1G -o foo=bar",
      "-O qcow2 --size 1G -o compat=0.10,refcount_bits=8",
      "-O qcow2 --size 1G -o extended_l2=on,cluster_size=4k",
      "-O qcow2 --size 1G -o refcount_bits=3",
      "-O raw --size 1G -o cluster_size=4k",
      "-O vmdk --size 1G",
  };
  for (const std::string& args : cases) {
    const RunResult qemu = dir_.Run("qemu-img measure " + args);
    const RunResult own = dir_.Qcrash("measure " + args);
    EXPECT_NE(qemu.exit_code, 0) << args;
    EXPECT_EQ(own.exit_code, qemu.exit_code) << args;
    EXPECT_TRUE(own.out.empty()) << args << own.out;
    // qemu-img's first line, with qcrash's name in front.
    const std::string first = qemu.err.substr(0, qemu.err.find('\n'));
    const std::string expected = "qcrash" + first.substr(first.find(':'));
    EXPECT_EQ(own.err.substr(0, own.err.find('\n')), expected) << args;
  }
}

TEST_F(CompareMeasure, OptionsMayFollowTheFileNameAndVersionIsPrinted) {
  const RunResult before = dir_.Qcrash("info --output=json a.qcow2");
  const RunResult after = dir_.Qcrash("info a.qcow2 --output=json");
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(after.out, before.out);
  EXPECT_EQ(dir_.Qcrash("map a.qcow2 --output=json").out,
            dir_.Qcrash("map --output=json a.qcow2").out);
  EXPECT_EQ(dir_.Qcrash("measure a.qcow2 -O qcow2 --output=json").out,
            dir_.Run("qemu-img measure a.qcow2 -O qcow2 --output=json").out);
  EXPECT_EQ(dir_.Qcrash("check a.qcow2 --output=json").exit_code, 0);
  for (const char* flag : {"--version", "-V"}) {
    const RunResult version = dir_.Qcrash(flag);
    EXPECT_EQ(version.exit_code, 0);
    EXPECT_EQ(version.out.rfind("qcrash version ", 0), 0u) << version.out;
  }
}

}  // namespace
}  // namespace qcrash::interop
