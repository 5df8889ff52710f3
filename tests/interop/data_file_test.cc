// Proves that images with an external data file (qcow2 incompatible bit 2,
// autoclear bit 1 for data_file_raw) are read and written alike by qcrash
// and QEMU: qemu-made images written by qemu-io describe (info text and
// JSON, map, check) and convert identically in qcrash; qcrash-made images
// written with `qcrash io` pass qemu-img check and read back equal in
// qemu-img convert; a bad data file option or a missing data file is one
// clear error.
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

struct Variant {
  const char* name;
  const char* options;  // qemu-img create -o
};

constexpr Variant kVariants[] = {
    {"plain", "data_file=img.data"},
    {"raw", "data_file=img.data,data_file_raw=on"},
    {"small-clusters", "data_file=img.data,cluster_size=4k"},
};

constexpr uint64_t kSize = 4 << 20;

class DataFileInterop : public testing::TestWithParam<Variant> {};

// The guest writes both tools apply (qemu-io and qcrash io accept the same -c commands).
std::vector<GuestOp> Ops() { return MixedWorkload(kSize, 64 << 10); }

TEST_P(DataFileInterop, QemuMadeImagesDescribeAndReadIdentically) {
  ScratchDir dir;
  const Variant v = GetParam();
  ASSERT_EQ(dir.Run(std::string("qemu-img create -q -f qcow2 -o ") + v.options + " img.qcow2 " +
                    std::to_string(kSize))
                .exit_code,
            0);
  ASSERT_EQ(dir.Run("qemu-io " + IoArgs(Ops()) + " img.qcow2 >/dev/null").exit_code, 0);
  // (check's JSON also carries qcrash's findings list: its text form is compared.)
  for (const char* command : {"info", "info --output=json", "map", "map --output=json", "check"}) {
    const RunResult ours = dir.Qcrash(std::string(command) + " img.qcow2");
    const RunResult theirs = dir.Run(std::string("qemu-img ") + command + " img.qcow2");
    EXPECT_EQ(ours.exit_code, theirs.exit_code) << command << ": " << ours.err;
    EXPECT_EQ(ours.out, theirs.out) << command;
  }
  ASSERT_EQ(dir.Qcrash("convert -O raw img.qcow2 ours.raw").exit_code, 0);
  ASSERT_EQ(dir.Run("qemu-img convert -O raw img.qcow2 theirs.raw").exit_code, 0);
  std::vector<uint8_t> guest(kSize, 0);
  ApplyToModel(Ops(), guest);
  const std::string model(guest.begin(), guest.end());
  EXPECT_EQ(FirstDifference(ReadFileBytes(dir.File("theirs.raw")), model), "");
  EXPECT_EQ(FirstDifference(ReadFileBytes(dir.File("ours.raw")), model), "");
}

TEST_P(DataFileInterop, QcrashMadeImagesPassQemuImgCheckAndReadBackInQemu) {
  ScratchDir dir;
  const Variant v = GetParam();
  const RunResult created = dir.Qcrash(std::string("create -q -f qcow2 -o ") + v.options +
                                       " img.qcow2 " + std::to_string(kSize));
  ASSERT_EQ(created.exit_code, 0) << created.err;
  // The data file exists beside the image, sized to the disk, as qemu-img makes it.
  EXPECT_EQ(ReadFileBytes(dir.File("img.data")).size(), kSize);
  const RunResult wrote = dir.Qcrash("io " + IoArgs(Ops()) + " img.qcow2");
  ASSERT_EQ(wrote.exit_code, 0) << wrote.err;
  const RunResult check = dir.Run("qemu-img check img.qcow2");
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_NE(check.out.find("No errors were found"), std::string::npos) << check.out;
  for (const char* command : {"info --output=json", "map --output=json", "check"}) {
    EXPECT_EQ(dir.Qcrash(std::string(command) + " img.qcow2").out,
              dir.Run(std::string("qemu-img ") + command + " img.qcow2").out)
        << command;
  }
  ASSERT_EQ(dir.Run("qemu-img convert -O raw img.qcow2 theirs.raw").exit_code, 0);
  std::vector<uint8_t> guest(kSize, 0);
  ApplyToModel(Ops(), guest);
  EXPECT_EQ(FirstDifference(ReadFileBytes(dir.File("theirs.raw")),
                            std::string(guest.begin(), guest.end())),
            "");
  if (std::string(v.name) == "raw") {
    // data_file_raw: the data file itself reads as the disk.
    EXPECT_EQ(FirstDifference(ReadFileBytes(dir.File("img.data")),
                              std::string(guest.begin(), guest.end())),
              "");
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, DataFileInterop, testing::ValuesIn(kVariants),
                         [](const auto& param_info) {
                           std::string name = param_info.param.name;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

TEST(DataFileBadInput, OneClearLineAndNothingWritten) {
  ScratchDir dir;
  struct Case {
    const char* args;
    const char* message;
  };
  for (const Case& c :
       {Case{"-o data_file_raw=on x.qcow2 1M", "data-file-raw requires data-file"},
        Case{"-o data_file=x.data,compat=0.10 x.qcow2 1M", "compatibility level"},
        Case{"-o data_file=x.data,data_file_raw=maybe x.qcow2 1M", "expects 'on' or 'off'"}}) {
    const RunResult r = dir.Qcrash(std::string("create -q ") + c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(dir.Run("test -e x.qcow2 || test -e x.data").exit_code, 0) << c.args;
  }
  // An image whose data file is missing does not open, and is left alone.
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 -o data_file=gone.data y.qcow2 1M && "
                    "rm gone.data")
                .exit_code,
            0);
  const std::string before = ReadFileBytes(dir.File("y.qcow2"));
  const RunResult io = dir.Qcrash("io -c 'write -P 1 0 4k' y.qcow2");
  EXPECT_NE(io.exit_code, 0);
  EXPECT_NE(io.err.find("gone.data"), std::string::npos) << io.err;
  EXPECT_EQ(ReadFileBytes(dir.File("y.qcow2")), before);
}

}  // namespace
}  // namespace qcrash::interop
