// Differential tests: the same qemu-io commands run by qemu-io and by
// `qcrash io` on byte-identical copies of one image (with backing chains)
// must leave guest views that `qemu-img compare` finds identical, and
// qcrash's copy must pass `qemu-img check`. The EngineRegression tests pin
// engine bugs found this way, now fixed.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

// Builds base.qcow2 (full of 0x11) and top.qcow2 over it, then copies top
// to q.qcow2 (for qemu-io) and o.qcow2 (for qcrash).
void MakeChain(const ScratchDir& dir, const std::string& compat, const std::string& cluster_size) {
  const std::string options = "-o compat=" + compat + ",cluster_size=" + cluster_size;
  const RunResult made = dir.Run("qemu-img create -q -f qcow2 " + options +
                                 " base.qcow2 1M && "
                                 "qemu-io -c 'write -P 0x11 0 1M' base.qcow2 >/dev/null && "
                                 "qemu-img create -q -f qcow2 " +
                                 options +
                                 " -b base.qcow2 -F qcow2 top.qcow2 && "
                                 "cp top.qcow2 q.qcow2 && cp top.qcow2 o.qcow2");
  ASSERT_EQ(made.exit_code, 0) << made.err;
}

void ExpectSameGuestView(const ScratchDir& dir, const std::string& script) {
  const RunResult qemu = dir.Run("qemu-io -f qcow2 " + script + " q.qcow2");
  const RunResult own = dir.Qcrash("io -f qcow2 " + script + " o.qcow2");
  ASSERT_EQ(qemu.exit_code, 0) << qemu.out << qemu.err;
  ASSERT_EQ(own.exit_code, 0) << own.out << own.err;
  const RunResult compare = dir.Run("qemu-img compare q.qcow2 o.qcow2");
  EXPECT_EQ(compare.exit_code, 0) << script << "\n" << compare.out << compare.err;
  const RunResult check = dir.Run("qemu-img check o.qcow2 2>&1");
  EXPECT_EQ(check.exit_code, 0) << check.out.substr(0, 2000);
}

// Zero writes with and without unmap (whole and partial clusters) over
// backing data, COW of partial writes, growing truncate and a write past the
// backing file's end.
const char* const kChainScript =
    "-c 'write -P 0x22 0 128k' -c 'write -z 128k 64k' -c 'write -z -u 192k 64k' "
    "-c 'write -P 0x33 320k 4k' -c 'write -z 320k 64k' -c 'write -z 400k 4k' "
    "-c 'write -z -u 500k 1k' -c 'write -P 0x55 700k 3k' -c 'write -z -u 701k 1k' "
    "-c 'truncate 2M' -c 'write -P 0x44 1536k 4k' -c 'truncate 3M'";

class ChainDifferential : public ::testing::TestWithParam<std::tuple<const char*, const char*>> {};

TEST_P(ChainDifferential, SameCommandsLeaveTheSameGuestView) {
  const auto [compat, cluster_size] = GetParam();
  ScratchDir dir;
  MakeChain(dir, compat, cluster_size);
  std::string script = kChainScript;
  // v3 discards make zero clusters; v2 discards with a backing file are
  // no-ops in QEMU (bug #1 in qcrash, see the DISABLED_ test below).
  if (std::string(compat) == "1.1") script += " -c 'discard 0 64k' -c 'discard 256k 128k'";
  ExpectSameGuestView(dir, script);
}

std::string ChainCaseName(
    const ::testing::TestParamInfo<std::tuple<const char*, const char*>>& case_info) {
  const std::string compat = std::get<0>(case_info.param);
  return (compat == "1.1" ? "v3_" : "v2_") + std::string(std::get<1>(case_info.param));
}

INSTANTIATE_TEST_SUITE_P(Interop, ChainDifferential,
                         ::testing::Combine(::testing::Values("0.10", "1.1"),
                                            ::testing::Values("512", "4k", "64k")),
                         ChainCaseName);

// QEMU refuses a discard on a v2 image with a backing file (it would expose
// the backing file's stale data); so must qcrash.
TEST(EngineRegression, DiscardOnV2WithBackingKeepsGuestData) {
  ScratchDir dir;
  MakeChain(dir, "0.10", "64k");
  ExpectSameGuestView(dir, "-c 'write -P 0x22 0 128k' -c 'discard 0 64k'");
  const RunResult read = dir.Qcrash("io -c 'read -P 0x22 0 64k' o.qcow2");
  EXPECT_EQ(read.exit_code, 0) << read.out;
}

// The journal policy on 512-byte clusters once failed after allocating the
// journal (the header no longer fit in cluster 0). It works now, and QEMU
// sees the image as clean but for the journal area, which it does not know
// (leaked clusters: exit 3), never as corrupt.
TEST(EngineRegression, JournalOnSmallClustersOpensAndQemuSeesNoCorruption) {
  ScratchDir dir;
  ASSERT_EQ(dir.Qcrash("create -q -o cluster_size=512 a.qcow2 4M").exit_code, 0);
  const RunResult io = dir.Qcrash("io --policy journal -c 'write -P 0x5a 0 4k' a.qcow2");
  ASSERT_EQ(io.exit_code, 0) << io.out;
  const int check = dir.Run("qemu-img check a.qcow2 >/dev/null 2>&1").exit_code;
  EXPECT_TRUE(check == 0 || check == 3) << "qemu-img check exit " << check;
  EXPECT_EQ(dir.Run("qemu-io -r -c 'read -P 0x5a 0 4k' a.qcow2 >/dev/null 2>&1").exit_code, 0);
}

}  // namespace
}  // namespace qcrash::interop
