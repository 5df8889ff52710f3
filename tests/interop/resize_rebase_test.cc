// Proves `qcrash resize` and `qcrash rebase` do what qemu-img's do: the same
// operations applied by each tool to copies of one image leave images that
// qemu-img check finds clean, that qemu-img info describes alike (size,
// backing file and format), and whose guest content qemu-img compare finds
// identical; refusals give the same exit code and message.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

// The lines of `qemu-img info` that name the virtual size and the backing file.
std::string InfoFields(const ScratchDir& dir, const std::string& image) {
  const RunResult info = dir.Run("qemu-img info -U " + image);
  std::string fields;
  size_t at = 0;
  while (at < info.out.size()) {
    size_t end = info.out.find('\n', at);
    if (end == std::string::npos) end = info.out.size();
    const std::string line = info.out.substr(at, end - at);
    if (line.rfind("virtual size:", 0) == 0 || line.rfind("backing file", 0) == 0)
      fields += line + "\n";
    at = end + 1;
  }
  return fields;
}

void ExpectCheckClean(const ScratchDir& dir, const std::string& image) {
  const RunResult check = dir.Run("qemu-img check " + image);
  EXPECT_EQ(check.exit_code, 0) << image << ": " << check.out << check.err;
}

// Applies `args` with `qcrash COMMAND` to ours.qcow2 and with `qemu-img
// COMMAND` to theirs.qcow2, and holds the results to each other.
void ApplyBoth(const ScratchDir& dir, const std::string& command, const std::string& args) {
  const RunResult ours = dir.Qcrash(command + " " + args + " ours.qcow2");
  const RunResult theirs = dir.Run("qemu-img " + command + " " + args + " theirs.qcow2");
  ASSERT_EQ(ours.exit_code, 0) << command << " " << args << ": " << ours.err;
  ASSERT_EQ(theirs.exit_code, 0) << command << " " << args << ": " << theirs.err;
  // -p: qemu-img redraws its progress line as often as its copy loop goes
  // round; both end on 100%.
  if (args.find("-p") == std::string::npos) {
    EXPECT_EQ(ours.out, theirs.out) << command << " " << args;
  } else {
    EXPECT_NE(ours.out.find("(100.00/100%)"), std::string::npos) << ours.out;
  }
  ExpectCheckClean(dir, "ours.qcow2");
  EXPECT_EQ(InfoFields(dir, "ours.qcow2"), InfoFields(dir, "theirs.qcow2"))
      << command << " " << args;
  const RunResult compare = dir.Run("qemu-img compare -U ours.qcow2 theirs.qcow2");
  EXPECT_EQ(compare.exit_code, 0) << command << " " << args << ": " << compare.out;
}

// resize's size goes last, after the file name.
void ResizeBoth(const ScratchDir& dir, const std::string& options, const std::string& size) {
  const RunResult ours = dir.Qcrash("resize " + options + " ours.qcow2 " + size);
  const RunResult theirs = dir.Run("qemu-img resize " + options + " theirs.qcow2 " + size);
  ASSERT_EQ(ours.exit_code, 0) << "resize " << options << " " << size << ": " << ours.err;
  ASSERT_EQ(theirs.exit_code, 0) << theirs.err;
  EXPECT_EQ(ours.out, theirs.out);
  ExpectCheckClean(dir, "ours.qcow2");
  EXPECT_EQ(InfoFields(dir, "ours.qcow2"), InfoFields(dir, "theirs.qcow2"));
  const RunResult compare = dir.Run("qemu-img compare -U ours.qcow2 theirs.qcow2");
  EXPECT_EQ(compare.exit_code, 0) << "resize " << options << " " << size << ": " << compare.out;
}

// An image over a raw backing file, 4 KiB clusters, some of it written, and
// a second raw file that differs from the first in part.
void MakeImages(const ScratchDir& dir) {
  ASSERT_EQ(dir.Run("qemu-img create -q -f raw b1.raw 1M && "
                    "qemu-io -f raw -c 'write -P 0x11 0 768k' b1.raw >/dev/null && "
                    "qemu-img create -q -f raw b2.raw 1M && "
                    "qemu-io -f raw -c 'write -P 0x11 0 256k' -c 'write -P 0x22 256k 256k' "
                    "-c 'write -P 0x33 900k 64k' b2.raw >/dev/null && "
                    "qemu-img create -q -f qcow2 -o cluster_size=4k -b b1.raw -F raw ours.qcow2 && "
                    "qemu-io -c 'write -P 0x55 100k 8k' -c 'write -P 0x66 300k 1k' "
                    "-c 'write -P 0x77 700k 64k' ours.qcow2 >/dev/null && "
                    "cp ours.qcow2 theirs.qcow2")
                .exit_code,
            0);
}

TEST(ResizeRebaseInterop, TheSameOperationsLeaveTheSameImages) {
  ScratchDir dir;
  MakeImages(dir);
  ResizeBoth(dir, "", "+5M");  // the L1 table grows (4 KiB clusters: 2 MiB each)
  ASSERT_EQ(dir.Run("qemu-io -c 'write -P 0x44 5M 64k' ours.qcow2 >/dev/null && "
                    "qemu-io -c 'write -P 0x44 5M 64k' theirs.qcow2 >/dev/null")
                .exit_code,
            0);
  ResizeBoth(dir, "--shrink", "-- -3M");         // over the data at 5M
  ResizeBoth(dir, "--shrink", "512K");           // below the backing file's end and the 700k data
  ResizeBoth(dir, "-q", "2M");                   // grown again: zeroes past 512K in both
  ApplyBoth(dir, "rebase", "-b b2.raw -F raw");  // safe: the guest reads the same
  ApplyBoth(dir, "rebase", "-p -b b1.raw -F raw");
  ApplyBoth(dir, "rebase", "-b ''");                // flattened: no backing file
  ApplyBoth(dir, "rebase", "-u -b b2.raw -F raw");  // unsafe: the name only
  EXPECT_NE(InfoFields(dir, "ours.qcow2").find("backing file: b2.raw"), std::string::npos)
      << InfoFields(dir, "ours.qcow2");
}

TEST(ResizeRebaseInterop, RebaseResolvesTheNewNameRelativeToTheImage) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("mkdir sub && qemu-img create -q -f raw sub/b.raw 1M && "
                    "qemu-io -f raw -c 'write -P 0x21 0 64k' sub/b.raw >/dev/null && "
                    "qemu-img create -q -f qcow2 sub/ours.qcow2 1M && "
                    "cp sub/ours.qcow2 sub/theirs.qcow2")
                .exit_code,
            0);
  ASSERT_EQ(dir.Qcrash("rebase -b b.raw -F raw sub/ours.qcow2").exit_code, 0);
  ASSERT_EQ(dir.Run("qemu-img rebase -b b.raw -F raw sub/theirs.qcow2").exit_code, 0);
  ExpectCheckClean(dir, "sub/ours.qcow2");
  // No data was behind the image before: the new file's data is hidden by zeroes.
  EXPECT_EQ(dir.Run("qemu-img compare sub/ours.qcow2 sub/theirs.qcow2").exit_code, 0);
  EXPECT_EQ(dir.Run("qemu-io -c 'read -P 0 0 64k' sub/ours.qcow2 | grep -c 'Pattern'").out, "0\n");
}

TEST(ResizeRebaseInterop, ResizeKeepsDataBeforeAShrinkAndZeroesWhatItDrops) {
  // QEMU keeps the old bytes in the rest of the last cluster past a shrink
  // (docs/qemu-driver.md); qcrash zeroes them. A shrink to a cluster
  // boundary compares equal; inside a cluster qcrash reads zeroes there.
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 -o cluster_size=4k ours.qcow2 1M && "
                    "qemu-io -c 'write -P 0x11 0 1M' ours.qcow2 >/dev/null")
                .exit_code,
            0);
  ASSERT_EQ(dir.Qcrash("resize -q --shrink ours.qcow2 5120").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("resize -q ours.qcow2 1M").exit_code, 0);
  ExpectCheckClean(dir, "ours.qcow2");
  EXPECT_EQ(dir.Run("qemu-io -c 'read -P 0x11 0 5120' -c 'read -P 0 5120 1043456' ours.qcow2 "
                    "| grep -c Pattern")
                .out,
            "0\n");
}

struct Refusal {
  const char* name;     // the test's name
  const char* command;  // run as `qcrash ...` and `qemu-img ...` in a directory with a.qcow2
};

class Refusals : public testing::TestWithParam<Refusal> {};

TEST_P(Refusals, AsQemuImg) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f raw b1.raw 1M && "
                    "qemu-img create -q -f qcow2 -b b1.raw -F raw a.qcow2 && cp a.qcow2 before")
                .exit_code,
            0);
  const std::string command = GetParam().command;
  const RunResult ours = dir.Qcrash(command);
  const RunResult theirs = dir.Run("qemu-img " + command);
  EXPECT_EQ(ours.exit_code, theirs.exit_code) << command << ": " << ours.err;
  EXPECT_NE(ours.exit_code, 0) << command;
  // The first line, the program name aside.
  auto first = [](const std::string& err, const std::string& prefix) {
    const std::string line = err.substr(0, err.find('\n'));
    return line.rfind(prefix, 0) == 0 ? line.substr(prefix.size()) : line;
  };
  EXPECT_EQ(first(ours.err, "qcrash: "), first(theirs.err, "qemu-img: ")) << command;
  EXPECT_EQ(ReadFileBytes(dir.File("a.qcow2")), ReadFileBytes(dir.File("before"))) << command;
}

INSTANTIATE_TEST_SUITE_P(
    ResizeRebase, Refusals,
    testing::Values(Refusal{"ShrinkWithoutShrink", "resize a.qcow2 512K"},
                    Refusal{"RelativeShrinkWithoutShrink", "resize a.qcow2 -512K"},
                    Refusal{"NoSize", "resize a.qcow2"}, Refusal{"BadSize", "resize a.qcow2 abc"},
                    Refusal{"NegativeSize", "resize --shrink a.qcow2 -10M"},
                    Refusal{"NotASectorMultiple", "resize a.qcow2 1000001"},
                    Refusal{"BadPreallocation", "resize --preallocation=foo a.qcow2 2M"},
                    Refusal{"PreallocatedShrink",
                            "resize --preallocation=full --shrink a.qcow2 512K"},
                    Refusal{"RebaseWithoutBacking", "rebase a.qcow2"},
                    Refusal{"RebaseWithoutFormat", "rebase -b b1.raw a.qcow2"},
                    Refusal{"RebaseTwoFiles", "rebase -b b1.raw -F raw a.qcow2 extra"}),
    [](const testing::TestParamInfo<Refusal>& param_info) {
      return std::string(param_info.param.name);
    });

}  // namespace
}  // namespace qcrash::interop
