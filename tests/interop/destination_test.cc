// Proves that no command that writes can destroy what it reads: convert and
// create refuse a destination that is their source or a file of its backing
// chain, io and check -r refuse an image that is its own backing file, under
// every spelling of the same file (plain, ./, a symlink, a hard link, a
// detour through a directory, an absolute path), and the source stays
// byte-identical. Also: an existing destination is replaced only when the new
// file is complete (a failed command leaves it and no temporary file), never
// while another process holds it, and a symlinked destination is written
// through, as qemu-img does.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

// A source image with data, and every way of naming it in `dir`.
std::vector<std::string> MakeSourceAndSpellings(const ScratchDir& dir) {
  const RunResult made = dir.Run(
      "qemu-img create -q -f qcow2 src.qcow2 4M && qemu-io -c 'write -P 0x5a 0 192k' src.qcow2 "
      ">/dev/null && "
      "ln -s src.qcow2 link.qcow2 && ln src.qcow2 hard.qcow2 && mkdir sub");
  EXPECT_EQ(made.exit_code, 0) << made.err;
  return {"src.qcow2",  "./src.qcow2",      "link.qcow2",
          "hard.qcow2", "sub/../src.qcow2", dir.File("src.qcow2")};
}

int LineCount(const std::string& text) {
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

// Runs `args`; expects a refusal in one line and `file` unchanged.
void ExpectRefusedAndUnchanged(const ScratchDir& dir, const std::string& args,
                               const std::string& file, const std::string& before) {
  const RunResult result = dir.Qcrash(args);
  EXPECT_NE(result.exit_code, 0) << args << "\n" << result.out;
  EXPECT_EQ(LineCount(result.err), 1) << args << ": " << result.err;
  EXPECT_EQ(result.out, "") << args;
  EXPECT_TRUE(ReadFileBytes(dir.File(file)) == before) << args << " changed " << file;
}

// No temporary file is left behind by a refused or failed command.
void ExpectNoTemporaryFiles(const ScratchDir& dir) {
  const RunResult listed = dir.Run("ls -A . sub 2>/dev/null | grep -c '^\\.qcrash-' || true");
  EXPECT_EQ(listed.out, "0\n") << "temporary files left: " << dir.Run("ls -A . sub").out;
}

TEST(Destination, ConvertOntoItsOwnSourceIsRefusedInEverySpelling) {
  ScratchDir dir;
  const std::vector<std::string> names = MakeSourceAndSpellings(dir);
  const std::string before = ReadFileBytes(dir.File("src.qcow2"));
  for (const std::string format : {"raw", "qcow2"}) {
    for (const std::string& name : names) {
      ExpectRefusedAndUnchanged(dir, "convert -O " + format + " src.qcow2 " + name, "src.qcow2",
                                before);
      ExpectRefusedAndUnchanged(dir, "convert -O " + format + " " + name + " src.qcow2",
                                "src.qcow2", before);
    }
  }
  // A raw source, too.
  ASSERT_EQ(
      dir.Run("qemu-img convert -O raw src.qcow2 src.raw && ln -s src.raw link.raw").exit_code, 0);
  const std::string raw_before = ReadFileBytes(dir.File("src.raw"));
  for (const std::string name : {"src.raw", "./src.raw", "link.raw"}) {
    for (const std::string format : {"raw", "qcow2"}) {
      ExpectRefusedAndUnchanged(dir, "convert -f raw -O " + format + " src.raw " + name, "src.raw",
                                raw_before);
    }
  }
  // qemu-img refuses the plain spelling too (through its write lock).
  EXPECT_NE(dir.Run("qemu-img convert -O raw src.qcow2 src.qcow2").exit_code, 0);
  EXPECT_TRUE(ReadFileBytes(dir.File("src.qcow2")) == before);
  ExpectNoTemporaryFiles(dir);
}

TEST(Destination, ConvertOntoAFileOfTheSourcesBackingChainIsRefused) {
  ScratchDir dir;
  const std::vector<std::string> names = MakeSourceAndSpellings(dir);
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 -b src.qcow2 -F qcow2 mid.qcow2 && "
                    "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 && "
                    "qemu-io -c 'write -P 0x6b 64k 64k' top.qcow2 >/dev/null")
                .exit_code,
            0);
  const std::string base_before = ReadFileBytes(dir.File("src.qcow2"));
  const std::string mid_before = ReadFileBytes(dir.File("mid.qcow2"));
  for (const std::string& name : names) {
    ExpectRefusedAndUnchanged(dir, "convert -O qcow2 top.qcow2 " + name, "src.qcow2", base_before);
    ExpectRefusedAndUnchanged(dir, "convert -O raw top.qcow2 " + name, "src.qcow2", base_before);
  }
  ExpectRefusedAndUnchanged(dir, "convert -O raw top.qcow2 ./mid.qcow2", "mid.qcow2", mid_before);
  ExpectNoTemporaryFiles(dir);
}

TEST(Destination, CreateOverItsOwnBackingFileIsRefusedInEverySpelling) {
  ScratchDir dir;
  const std::vector<std::string> names = MakeSourceAndSpellings(dir);
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 -b src.qcow2 -F qcow2 top.qcow2").exit_code, 0);
  const std::string before = ReadFileBytes(dir.File("src.qcow2"));
  for (const std::string& name : names) {
    ExpectRefusedAndUnchanged(dir, "create -f qcow2 -b src.qcow2 -F qcow2 " + name, "src.qcow2",
                              before);
    ExpectRefusedAndUnchanged(dir, "create -f qcow2 -b " + name + " -F qcow2 src.qcow2",
                              "src.qcow2", before);
    // Deeper in the chain: top's backing file is the source.
    ExpectRefusedAndUnchanged(dir, "create -f qcow2 -b top.qcow2 -F qcow2 " + name, "src.qcow2",
                              before);
  }
  // The one spelling qemu-img catches (it compares names); with a symlink it
  // overwrites its own backing file, which qcrash never does.
  EXPECT_NE(dir.Run("qemu-img create -q -f qcow2 -b src.qcow2 -F qcow2 src.qcow2").exit_code, 0);
  EXPECT_TRUE(ReadFileBytes(dir.File("src.qcow2")) == before);
  ExpectNoTemporaryFiles(dir);
}

// Makes `self.qcow2` an image whose backing file is itself under `spelling`
// (created naming b.qcow2, which then becomes the image or a link to it).
void MakeSelfBacked(const ScratchDir& dir, const std::string& how) {
  dir.Run("rm -f self.qcow2 b.qcow2");
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 b.qcow2 4M && "
                    "qemu-img create -q -f qcow2 -b " +
                    std::string(how == "dot" ? "./b.qcow2" : "b.qcow2") +
                    " -F qcow2 self.qcow2 && qemu-io -c 'write -P 0x7c 0 64k' self.qcow2 "
                    ">/dev/null && rm b.qcow2")
                .exit_code,
            0);
  if (how == "plain" || how == "dot") {
    ASSERT_EQ(dir.Run("mv self.qcow2 b.qcow2 && ln -s b.qcow2 self.qcow2").exit_code, 0);
  } else if (how == "symlink") {
    ASSERT_EQ(dir.Run("ln -s self.qcow2 b.qcow2").exit_code, 0);
  } else {
    ASSERT_EQ(dir.Run("ln self.qcow2 b.qcow2").exit_code, 0);
  }
}

TEST(Destination, IoAndRepairRefuseAnImageThatIsItsOwnBackingFile) {
  ScratchDir dir;
  for (const std::string how : {"plain", "dot", "symlink", "hardlink"}) {
    SCOPED_TRACE(how);
    MakeSelfBacked(dir, how);
    const std::string before = ReadFileBytes(dir.File("self.qcow2"));
    for (const std::string name : {"self.qcow2", "b.qcow2", "./self.qcow2"}) {
      ExpectRefusedAndUnchanged(dir, "io -c 'write -P 0x33 0 4k' " + name, "self.qcow2", before);
      ExpectRefusedAndUnchanged(dir, "io -c 'discard 0 64k' -c flush " + name, "self.qcow2",
                                before);
      const RunResult repair = dir.Qcrash("check -r all " + name);
      EXPECT_NE(repair.exit_code, 0) << name << ": " << repair.out;
      EXPECT_TRUE(ReadFileBytes(dir.File("self.qcow2")) == before) << "check -r all " << name;
    }
    // QEMU cannot open such an image for writing either.
    EXPECT_NE(dir.Run("qemu-io -c 'write -P 0x33 0 4k' self.qcow2").exit_code, 0);
    EXPECT_TRUE(ReadFileBytes(dir.File("self.qcow2")) == before);
  }
}

TEST(Destination, CreateOverAnExistingFileReplacesItWholeKeepingItsMode) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("head -c 3000000 /dev/urandom > old.img && chmod 0640 old.img").exit_code, 0);
  const RunResult made = dir.Qcrash("create -q -f qcow2 old.img 1M");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  EXPECT_EQ(dir.Run("qemu-img check old.img").exit_code, 0);
  EXPECT_LT(ReadFileBytes(dir.File("old.img")).size(), 3000000u)
      << "the old bytes were not replaced";
  struct stat st {};
  ASSERT_EQ(::stat(dir.File("old.img").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  // Through a symlink: the file it names is replaced, the link stays.
  ASSERT_EQ(dir.Run("ln -s old.img via.img").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("convert -O raw old.img via.img").exit_code, 1) << "via.img is old.img";
  ASSERT_EQ(dir.Run("head -c 4096 /dev/zero > other.raw && ln -sf other.raw via.img").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("convert -O raw old.img via.img").exit_code, 0);
  EXPECT_EQ(dir.Run("test -L via.img").exit_code, 0) << "the symlink was replaced by a file";
  EXPECT_EQ(ReadFileBytes(dir.File("other.raw")).size(), 1u << 20);
  EXPECT_EQ(dir.Run("qemu-img compare -f qcow2 -F raw old.img other.raw").exit_code, 0);
  ExpectNoTemporaryFiles(dir);
}

TEST(Destination, AFailedCommandLeavesTheOldDestinationAndNoTemporaryFile) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 src.qcow2 1M && echo keep > old.raw").exit_code,
            0);
  const std::string before = ReadFileBytes(dir.File("old.raw"));
  ExpectRefusedAndUnchanged(dir, "convert -O qcow2 -o cluster_size=3k src.qcow2 old.raw", "old.raw",
                            before);
  ExpectRefusedAndUnchanged(dir, "convert -O qcow2 -o bogus=1 src.qcow2 old.raw", "old.raw",
                            before);
  ExpectRefusedAndUnchanged(dir, "create -f qcow2 -o refcount_bits=3 old.raw 1M", "old.raw",
                            before);
  ExpectNoTemporaryFiles(dir);
}

// qemu-img create and convert fail to get the write lock of a destination a
// running qemu-io holds; so does qcrash, and the file stays as it was.
TEST(Destination, ADestinationAnotherProcessHoldsIsRefused) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 busy.qcow2 1M && qemu-img create -q -f qcow2 "
                    "src.qcow2 1M")
                .exit_code,
            0);
  const std::string before = ReadFileBytes(dir.File("busy.qcow2"));
  const RunResult held = dir.Run(
      "qemu-io -c 'sleep 60000' busy.qcow2 >/dev/null 2>&1 & echo $! > qemu-io.pid; "
      "for i in $(seq 600); do qemu-img info busy.qcow2 >/dev/null 2>&1 || exit 0; sleep 0.05; "
      "done; exit 1");
  struct KillHolder {
    const ScratchDir& dir;
    ~KillHolder() { dir.Run("kill $(cat qemu-io.pid) 2>/dev/null; true"); }
  } kill_holder{dir};
  ASSERT_EQ(held.exit_code, 0) << "qemu-io never took its lock";
  EXPECT_NE(dir.Run("qemu-img create -q -f qcow2 busy.qcow2 1M").exit_code, 0);
  for (const std::string args :
       {"create -f qcow2 busy.qcow2 1M", "convert -O qcow2 src.qcow2 busy.qcow2",
        "convert -O raw src.qcow2 busy.qcow2"}) {
    ExpectRefusedAndUnchanged(dir, args, "busy.qcow2", before);
    const RunResult result = dir.Qcrash(args);
    EXPECT_NE(result.err.find("lock"), std::string::npos) << args << ": " << result.err;
  }
  ExpectNoTemporaryFiles(dir);
}

}  // namespace
}  // namespace qcrash::interop
