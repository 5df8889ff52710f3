// Persistent dirty bitmaps against QEMU's tools: what qcrash's engine
// tracks and stores, QEMU reads as the same dirty ranges (qemu-nbd exports
// a bitmap, qemu-img map shows it: dirty ranges come out as "data":
// false), and what QEMU stored, qcrash keeps through its own writes.
// qemu-img check is clean after every step.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;  // [start, start + length)

// The dirty ranges of bitmap `name` in `image`, as QEMU reads them.
Ranges DirtyRanges(const ScratchDir& dir, const std::string& image, const std::string& name) {
  const RunResult map = dir.Run(
      "qemu-nbd -r -B " + name + " --socket=$PWD/nbd.sock --pid-file=nbd.pid --fork -f qcow2 " +
      image +
      " && qemu-img map --output=json --image-opts "
      "driver=nbd,server.type=unix,server.path=$PWD/nbd.sock,x-dirty-bitmap=qemu:dirty-bitmap:" +
      name +
      // qemu-nbd exits after its last client, but not at once: wait, so that
      // it no longer holds the image's lock when the next command opens it.
      "; status=$?; while kill -0 \"$(cat nbd.pid)\" 2>/dev/null; do sleep 0.02; done; "
      "exit $status");
  EXPECT_EQ(map.exit_code, 0) << map.err;
  Ranges out;
  if (map.exit_code != 0) return out;
  for (const auto& extent : nlohmann::json::parse(map.out)) {
    if (extent["data"].get<bool>()) continue;
    const uint64_t start = extent["start"], length = extent["length"];
    if (!out.empty() && out.back().second == start) {
      out.back().second = start + length;
    } else {
      out.push_back({start, start + length});
    }
  }
  return out;
}

void ExpectQemuCheckClean(const ScratchDir& dir, const std::string& image) {
  const RunResult check = dir.Run("qemu-img check " + image);
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_NE(check.out.find("No errors were found"), std::string::npos) << check.out;
}

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;

TEST(BitmapInterop, QcrashTrackedWritesAreTheDirtyRangesQemuReads) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 img.qcow2 4M").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("bitmap --add -g 4k img.qcow2 fine").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("bitmap --add img.qcow2 coarse").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("bitmap --add --disable img.qcow2 off").exit_code, 0);
  const RunResult io = dir.Qcrash("io -c 'write -P 1 8k 4k' -c 'write -P 2 1M 100k' img.qcow2");
  ASSERT_EQ(io.exit_code, 0) << io.err;
  ExpectQemuCheckClean(dir, "img.qcow2");
  const RunResult info = dir.Run("qemu-img info --output=json img.qcow2");
  ASSERT_EQ(info.exit_code, 0) << info.err;
  const auto bitmaps = nlohmann::json::parse(info.out)["format-specific"]["data"]["bitmaps"];
  ASSERT_EQ(bitmaps.size(), 3u) << info.out;
  EXPECT_EQ(bitmaps[0]["name"], "fine");
  EXPECT_EQ(bitmaps[0]["granularity"], 4096);
  EXPECT_EQ(bitmaps[0]["flags"], nlohmann::json::array({"auto"}));
  EXPECT_EQ(bitmaps[1]["granularity"], 65536);
  EXPECT_EQ(bitmaps[2]["flags"], nlohmann::json::array());
  EXPECT_EQ(DirtyRanges(dir, "img.qcow2", "fine"),
            (Ranges{{8 * kKiB, 12 * kKiB}, {1 * kMiB, 1 * kMiB + 100 * kKiB}}));
  EXPECT_EQ(DirtyRanges(dir, "img.qcow2", "coarse"),
            (Ranges{{8 * kKiB / 65536 * 65536, 64 * kKiB}, {1 * kMiB, 1 * kMiB + 128 * kKiB}}));
  EXPECT_EQ(DirtyRanges(dir, "img.qcow2", "off"), Ranges{});
  // qcrash info lists them as qemu-img info does.
  const RunResult own = dir.Qcrash("info --output=json img.qcow2");
  ASSERT_EQ(own.exit_code, 0) << own.err;
  EXPECT_EQ(nlohmann::json::parse(own.out)["format-specific"]["data"]["bitmaps"], bitmaps);
}

TEST(BitmapInterop, QemuBitmapsKeepTheirBitsThroughQcrashWritesClearMergeAndRemove) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 img.qcow2 4M && "
                    "qemu-img bitmap --add -g 4k img.qcow2 b0 && "
                    "qemu-io -c 'write 0 4k' img.qcow2 >/dev/null")
                .exit_code,
            0);
  ASSERT_EQ(dir.Qcrash("io -c 'write 64k 4k' -c 'write -z 3M 4k' img.qcow2").exit_code, 0);
  ExpectQemuCheckClean(dir, "img.qcow2");
  EXPECT_EQ(DirtyRanges(dir, "img.qcow2", "b0"),
            (Ranges{{0, 4 * kKiB}, {64 * kKiB, 68 * kKiB}, {3 * kMiB, 3 * kMiB + 4 * kKiB}}));
  // Merge into a coarser bitmap, then clear the source.
  ASSERT_EQ(dir.Qcrash("bitmap --add img.qcow2 b1").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("bitmap --merge b0 img.qcow2 b1").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("bitmap --clear img.qcow2 b0").exit_code, 0);
  ExpectQemuCheckClean(dir, "img.qcow2");
  EXPECT_EQ(DirtyRanges(dir, "img.qcow2", "b1"),
            (Ranges{{0, 128 * kKiB}, {3 * kMiB, 3 * kMiB + 64 * kKiB}}));
  EXPECT_EQ(DirtyRanges(dir, "img.qcow2", "b0"), Ranges{});
  // QEMU writes on top: QEMU tracks into what qcrash stored.
  ASSERT_EQ(dir.Run("qemu-io -c 'write 2M 4k' img.qcow2 >/dev/null").exit_code, 0);
  EXPECT_EQ(DirtyRanges(dir, "img.qcow2", "b0"), (Ranges{{2 * kMiB, 2 * kMiB + 4 * kKiB}}));
  ASSERT_EQ(dir.Qcrash("bitmap --remove img.qcow2 b0").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("bitmap --remove img.qcow2 b1").exit_code, 0);
  ExpectQemuCheckClean(dir, "img.qcow2");
  const RunResult info = dir.Run("qemu-img info --output=json img.qcow2");
  EXPECT_FALSE(nlohmann::json::parse(info.out)["format-specific"]["data"].contains("bitmaps"))
      << info.out;
}

TEST(BitmapInterop, ABitmapQemuLeftInUseIsInconsistentAndOnlyRemovable) {
  ScratchDir dir;
  // qemu-io's abort: QEMU dies with the bitmap's in_use set on disk.
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 img.qcow2 4M && "
                    "qemu-img bitmap --add img.qcow2 b0 && "
                    "(qemu-io -c 'write 0 4k' -c abort img.qcow2 >/dev/null 2>&1; true)")
                .exit_code,
            0);
  const RunResult info = dir.Qcrash("info img.qcow2");
  EXPECT_NE(info.out.find("in-use"), std::string::npos) << info.out;
  const RunResult clear = dir.Qcrash("bitmap --clear img.qcow2 b0");
  EXPECT_EQ(clear.exit_code, 1);
  EXPECT_NE(clear.err.find("inconsistent"), std::string::npos) << clear.err;
  // Writes keep it as it is (in_use): nobody may trust it.
  ASSERT_EQ(dir.Qcrash("io -c 'write 64k 4k' img.qcow2").exit_code, 0);
  ExpectQemuCheckClean(dir, "img.qcow2");
  EXPECT_NE(dir.Run("qemu-img info img.qcow2").out.find("in-use"), std::string::npos);
  ASSERT_EQ(dir.Qcrash("bitmap --remove img.qcow2 b0").exit_code, 0);
  ExpectQemuCheckClean(dir, "img.qcow2");
  EXPECT_EQ(dir.Run("qemu-img info img.qcow2").out.find("bitmaps"), std::string::npos);
}

TEST(BitmapInterop, AFailedOperationWritesNothing) {
  ScratchDir dir;
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 img.qcow2 4M").exit_code, 0);
  ASSERT_EQ(dir.Qcrash("bitmap --add img.qcow2 b0").exit_code, 0);
  const std::string before = ReadFileBytes(dir.File("img.qcow2"));
  for (const char* bad : {"bitmap --add img.qcow2 b0", "bitmap --clear img.qcow2 nope",
                          "bitmap --add -g 1000 img.qcow2 b1", "bitmap --add --clear img.qcow2 b0",
                          "bitmap img.qcow2 b0"}) {
    const RunResult r = dir.Qcrash(bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << bad << ": " << r.err;
    EXPECT_TRUE(ReadFileBytes(dir.File("img.qcow2")) == before) << bad;
  }
  // The v2 format has no autoclear bits: refused, nothing written.
  ASSERT_EQ(dir.Run("qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M").exit_code, 0);
  const std::string v2 = ReadFileBytes(dir.File("v2.qcow2"));
  EXPECT_NE(dir.Qcrash("bitmap --add v2.qcow2 b0").exit_code, 0);
  EXPECT_TRUE(ReadFileBytes(dir.File("v2.qcow2")) == v2);
}

}  // namespace
}  // namespace qcrash::interop
