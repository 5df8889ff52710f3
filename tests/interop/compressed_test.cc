// Proves that compressed clusters interoperate with QEMU both ways, for
// zlib and zstd: images qemu-img convert -c makes read, map, check and
// convert in qcrash as in qemu-img; images `qcrash convert -c` and
// `qcrash io -c 'write -c ...'` make check clean in qemu-img, map their
// compressed clusters as QEMU's own do, and hold the same guest content.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

// A raw source: patterns (compressible), a cluster of random bytes (not
// compressible: stored plain by both tools), holes, and a partial last
// cluster (1M + 24k is not a multiple of 64k).
constexpr const char* kMakeSource =
    "qemu-img create -q -f raw src.raw 1048576 && "
    "qemu-io -f raw -c 'write -P 0x11 0 200k' -c 'write -P 0x22 320k 64k' "
    "-c 'write -P 0x33 700k 12k' src.raw >/dev/null && "
    "head -c 65536 /dev/urandom > rand.bin && "
    "qemu-io -f raw -c 'write -s rand.bin 512k 64k' src.raw >/dev/null && "
    "qemu-img resize -q -f raw src.raw 1073152 && "
    "qemu-io -f raw -c 'write -P 0x44 1040k 8k' src.raw >/dev/null";

// qemu-img map --output=json without the host offsets (the two tools place
// clusters differently; what is compressed, plain data or zero must agree).
nlohmann::json MapWithoutOffsets(const ScratchDir& dir, const std::string& image) {
  RunResult map = dir.Run("qemu-img map -U --output=json " + image);
  EXPECT_EQ(map.exit_code, 0) << map.err;
  nlohmann::json json = nlohmann::json::parse(map.out);
  for (auto& extent : json) extent.erase("offset");
  return json;
}

class Compression : public ::testing::TestWithParam<std::string> {};

// (a) An image qemu-img convert -c made reads in qcrash exactly as in
// QEMU: info, map, check and the raw guest view.
TEST_P(Compression, QemuMadeImageReadsAsInQemu) {
  const std::string type = GetParam();
  ScratchDir dir;
  RunResult setup = dir.Run(std::string(kMakeSource) +
                            " && qemu-img convert -c -f raw -O qcow2 -o compression_type=" + type +
                            " src.raw img.qcow2");
  ASSERT_EQ(setup.exit_code, 0) << setup.err;
  for (const char* output : {"json", "human"}) {
    RunResult qemu = dir.Run(std::string("qemu-img info -U --output=") + output + " img.qcow2");
    RunResult own = dir.Qcrash(std::string("info --output=") + output + " img.qcow2");
    ASSERT_EQ(own.exit_code, 0) << own.err;
    EXPECT_EQ(own.out, qemu.out) << output;
    qemu = dir.Run(std::string("qemu-img map -U --output=") + output + " img.qcow2");
    own = dir.Qcrash(std::string("map --output=") + output + " img.qcow2");
    EXPECT_EQ(own.exit_code != 0, qemu.exit_code != 0) << own.err << qemu.err;
    EXPECT_EQ(own.out, qemu.out) << output;
  }
  EXPECT_NE(dir.Qcrash("info img.qcow2").out.find("compression type: " + type), std::string::npos);
  RunResult qemu_check = dir.Run("qemu-img check img.qcow2");
  RunResult own_check = dir.Qcrash("check img.qcow2");
  EXPECT_EQ(own_check.exit_code, qemu_check.exit_code) << own_check.out << qemu_check.out;
  EXPECT_EQ(own_check.out, qemu_check.out);
  ASSERT_EQ(dir.Qcrash("convert -O raw img.qcow2 own.raw").exit_code, 0);
  EXPECT_EQ(FirstDifference(ReadFileBytes(dir.File("own.raw")), ReadFileBytes(dir.File("src.raw"))),
            "");
}

// (b) `qcrash convert -c` writes an image qemu-img checks clean, whose
// compressed clusters qemu-img maps as it maps its own convert -c output,
// and which qemu-img compare finds identical to the source.
TEST_P(Compression, QcrashConvertCompressedIsCleanForQemu) {
  const std::string type = GetParam();
  ScratchDir dir;
  ASSERT_EQ(dir.Run(kMakeSource).exit_code, 0);
  ASSERT_EQ(dir.Run("qemu-img convert -c -f raw -O qcow2 -o compression_type=" + type +
                    " src.raw qemu.qcow2")
                .exit_code,
            0);
  RunResult own =
      dir.Qcrash("convert -c -f raw -O qcow2 -o compression_type=" + type + " src.raw own.qcow2");
  ASSERT_EQ(own.exit_code, 0) << own.err;
  RunResult check = dir.Run("qemu-img check own.qcow2");
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_NE(check.out.find("No errors were found on the image."), std::string::npos) << check.out;
  EXPECT_EQ(check.out.find("leaked"), std::string::npos) << check.out;
  EXPECT_EQ(MapWithoutOffsets(dir, "own.qcow2"), MapWithoutOffsets(dir, "qemu.qcow2"));
  // The patterned clusters are compressed: no offset for any data extent
  // but the random cluster's.
  const nlohmann::json map =
      nlohmann::json::parse(dir.Run("qemu-img map --output=json own.qcow2").out);
  for (const auto& extent : map) {
    if (!extent["data"].get<bool>()) continue;
    const bool random = extent["start"].get<uint64_t>() == 512 * 1024;
    EXPECT_EQ(extent.contains("offset"), random) << extent.dump();
  }
  RunResult compare = dir.Run("qemu-img compare -f raw -F qcow2 src.raw own.qcow2");
  EXPECT_EQ(compare.exit_code, 0) << compare.out;
  const nlohmann::json info =
      nlohmann::json::parse(dir.Run("qemu-img info --output=json own.qcow2").out);
  EXPECT_EQ(info["format-specific"]["data"]["compression-type"], type);
  // qcrash's own check agrees with qemu-img's on it.
  EXPECT_EQ(dir.Qcrash("check own.qcow2").out, check.out);
}

// (c) qcrash io's write -c, then overwrites, a partial write, a discard
// and a zero write over the compressed clusters, and compressed writes
// into the discarded and zeroed ones: qemu-img check finds no leak, and
// the content equals QEMU doing the same with qemu-io.
TEST_P(Compression, IoWriteCompressedThenOverwriteAndDiscard) {
  const std::string type = GetParam();
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 -o cluster_size=4096,compression_type=" + type +
                    " q.qcow2 1M && cp q.qcow2 o.qcow2")
                .exit_code,
            0);
  const std::string script =
      "-c 'write -c -P 0x51 0 64k' -c 'write -c -P 0x52 64k 8k' -c 'write -P 0x53 8k 4k' "
      "-c 'write -P 0x54 20k 512' -c 'discard 32k 8k' -c 'write -z 48k 4k' "
      "-c 'write -c -P 0x55 32k 4k' -c 'write -c -P 0x56 1020k 4k' -c 'write -c -P 0x57 48k 4k' "
      "-c 'read -P 0x51 0 4k' -c 'read -P 0x52 64k 8k' -c 'read -P 0x55 32k 4k'";
  RunResult qemu = dir.Run("qemu-io " + script + " q.qcow2");
  RunResult own = dir.Qcrash("io " + script + " o.qcow2");
  ASSERT_EQ(qemu.exit_code, 0) << qemu.out << qemu.err;
  ASSERT_EQ(own.exit_code, 0) << own.out << own.err;
  RunResult check = dir.Run("qemu-img check o.qcow2");
  EXPECT_EQ(check.exit_code, 0) << check.out;
  EXPECT_NE(check.out.find("No errors were found on the image."), std::string::npos) << check.out;
  EXPECT_EQ(dir.Qcrash("check o.qcow2").out, check.out);
  RunResult compare = dir.Run("qemu-img compare q.qcow2 o.qcow2");
  EXPECT_EQ(compare.exit_code, 0) << compare.out;
  EXPECT_EQ(MapWithoutOffsets(dir, "o.qcow2"), MapWithoutOffsets(dir, "q.qcow2"));
}

INSTANTIATE_TEST_SUITE_P(Interop, Compression, ::testing::Values("zlib", "zstd"),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           return param_info.param;
                         });

// Bad compressed requests: one line, non-zero exit, nothing written.
TEST(CompressionBadInput, RefusedWithOneLineAndNoWrite) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 -o cluster_size=4096 x.qcow2 1M && "
                    "cp x.qcow2 before.qcow2")
                .exit_code,
            0);
  for (const std::string& args :
       {std::string("create -f qcow2 -o compression_type=lz4 y.qcow2 1M"),
        std::string("create -f qcow2 -o compat=0.10,compression_type=zstd y.qcow2 1M"),
        std::string("convert -c -O raw x.qcow2 y.raw")}) {
    RunResult own = dir.Qcrash(args);
    EXPECT_NE(own.exit_code, 0) << args;
    EXPECT_EQ(std::count(own.err.begin(), own.err.end(), '\n'), 1) << args << ": " << own.err;
    EXPECT_NE(dir.Run("test -e y.qcow2 || test -e y.raw").exit_code, 0) << args;
  }
  // Unaligned compressed writes fail like qemu-io's and change nothing.
  RunResult own = dir.Qcrash("io -c 'write -c 512 4k' x.qcow2");
  EXPECT_NE(own.out.find("write failed"), std::string::npos) << own.out;
  EXPECT_EQ(dir.Run("cmp x.qcow2 before.qcow2").exit_code, 0);
  // A compressed write over an allocated cluster fails in both tools (QEMU
  // compresses only into clusters without a host cluster), and in qcrash
  // the clusters before it in the request are not written either.
  ASSERT_EQ(dir.Run("qemu-io -c 'write -P 0x61 8k 4k' x.qcow2 >/dev/null && cp x.qcow2 q.qcow2 && "
                    "cp x.qcow2 before.qcow2")
                .exit_code,
            0);
  RunResult qemu = dir.Run("qemu-io -c 'write -c 8k 4k' q.qcow2");
  own = dir.Qcrash("io -c 'write -c 4k 8k' x.qcow2");
  EXPECT_NE(qemu.out.find("write failed"), std::string::npos) << qemu.out;
  EXPECT_NE(own.out.find("write failed"), std::string::npos) << own.out;
  EXPECT_EQ(dir.Run("qemu-img compare x.qcow2 before.qcow2").exit_code, 0);
}

}  // namespace
}  // namespace qcrash::interop
