// Differential tests against qemu-img check 7.2 (label interop). Proves that
// on corrupt images built from valid ones by one corruption class:
//   - qcrash and qemu-img agree on clean / leaks / corruptions / check failed
//     and on every counter (corruptions, leaks, check errors, image end
//     offset, allocated, fragmented and compressed clusters);
//   - after qcrash's repair (-r all) qemu-img check finds the image clean,
//     the guest content of every cluster the corruption did not touch is
//     unchanged, repair dropped only touched clusters, and a second repair
//     writes nothing;
//   - after qemu-img check -r all (when qemu's own re-check is clean) qcrash
//     finds the image clean.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "engine/check.h"
#include "engine/file_device.h"
#include "tests/check/check_test_util.h"
#include "tests/check/corruptions.h"

namespace qcrash::check_test {
namespace {

// Keep the property fast: a few dozen cases, each running qemu-img ~6 times.
[[maybe_unused]] const int kRcParams = setenv("RC_PARAMS", "max_success=40", 0);

struct Base {
  std::string name;
  std::string path;
  std::vector<uint8_t> bytes;
  std::vector<uint8_t> guest;  // raw guest content
};

struct Bases {
  TempDir dir;
  std::vector<Base> images;
};

const Bases& TheBases() {
  static Bases* bases = [] {
    auto* b = new Bases;
    const std::vector<std::string> writes = {"write -P 0x11 0 192k", "write -c -P 0x22 1M 64k",
                                             "write -z 2M 64k", "write -P 0x33 5M 8k",
                                             "write -P 0x44 7M 64k"};
    auto add = [&](const std::string& name, const std::string& options, bool snapshot) {
      const std::string path = b->dir.File(name + ".qcow2");
      EXPECT_TRUE(MakeImage(path, options, "8M", writes)) << name;
      if (snapshot) {
        RunCommand("qemu-img snapshot -c s1 '" + path + "'");
        RunCommand("qemu-io -c 'write -P 0x55 32k 64k' -c 'write -P 0x66 6M 4k' '" + path + "'");
      }
      b->images.push_back({name, path, ReadFileBytes(path), GuestBytes(path, b->dir.File("raw"))});
    };
    add("v3-64k", "", false);
    add("v3-4k-snapshot", "-o cluster_size=4096", true);
    add("v2-64k-snapshot", "-o compat=0.10", true);
    add("v3-16k-refcount8", "-o cluster_size=16k,refcount_bits=8", false);
    return b;
  }();
  return *bases;
}

struct Counts {
  int exit_code = -1;
  uint64_t corruptions = 0, leaks = 0, check_errors = 0, image_end_offset = 0;
  uint64_t allocated = 0, fragmented = 0, compressed = 0;
  bool operator==(const Counts&) const = default;
};

std::string ToString(const Counts& c) {
  std::ostringstream out;
  out << "{exit " << c.exit_code << ", corruptions " << c.corruptions << ", leaks " << c.leaks
      << ", check_errors " << c.check_errors << ", end " << c.image_end_offset << ", allocated "
      << c.allocated << ", fragmented " << c.fragmented << ", compressed " << c.compressed << "}";
  return out.str();
}

Counts QemuCounts(const std::string& path) {
  const CommandResult r = RunCommand("qemu-img check -U --output=json '" + path + "'");
  Counts c;
  c.exit_code = r.exit_code;
  const auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return c;  // could not open: exit code only
  auto get = [&](const char* key) { return j.contains(key) ? j[key].get<uint64_t>() : 0; };
  c.corruptions = get("corruptions");
  c.leaks = get("leaks");
  c.check_errors = get("check-errors");
  c.image_end_offset = get("image-end-offset");
  c.allocated = get("allocated-clusters");
  c.fragmented = get("fragmented-clusters");
  c.compressed = get("compressed-clusters");
  return c;
}

Result<engine::CheckReport> RunCheck(const std::string& path, engine::RepairMode mode,
                                     uint64_t* writes = nullptr) {
  QCRASH_ASSIGN_OR_RETURN(auto device, FileDevice::Open(path, mode == engine::RepairMode::kNone
                                                                  ? FileDevice::Mode::kReadOnly
                                                                  : FileDevice::Mode::kReadWrite));
  CountingDevice counting(*device);
  auto report = engine::CheckImage(counting, {mode});
  if (writes) *writes = counting.writes;
  return report;
}

Counts OurCounts(const std::string& path) {
  Counts c;
  auto report = RunCheck(path, engine::RepairMode::kNone);
  if (!report.ok()) {
    c.exit_code = 1;
    return c;
  }
  const engine::CheckReport& r = *report;
  c.exit_code = r.check_errors ? 1 : r.corruptions ? 2 : r.leaks ? 3 : 0;
  c = {c.exit_code,           r.corruptions,        r.leaks,
       r.check_errors,        r.image_end_offset,   r.allocated_clusters,
       r.fragmented_clusters, r.compressed_clusters};
  return c;
}

// Runs every claim of this file's header comment on one corruption; returns
// a description of the first failure, or "".
std::string CheckOneCase(const Base& base, Corruption corruption, uint64_t choice, bool* applied) {
  std::vector<uint8_t> image = base.bytes;
  const Applied a = ApplyCorruption(image, corruption, choice);
  *applied = a.ok;
  if (!a.ok) return "";
  TempDir dir;
  const std::string label =
      base.name + " / " + CorruptionName(corruption) + " / " + std::to_string(choice) + ": ";
  const std::string corrupt = dir.File("corrupt.qcow2");
  WriteFileBytes(corrupt, image);
  const Counts qemu = QemuCounts(corrupt);
  const Counts ours = OurCounts(corrupt);
  if (!(qemu == ours)) return label + "qemu-img " + ToString(qemu) + " vs qcrash " + ToString(ours);

  // qcrash repairs; qemu-img must find the result clean.
  const std::string fixed = dir.File("fixed.qcow2");
  WriteFileBytes(fixed, image);
  auto repair = RunCheck(fixed, engine::RepairMode::kAll);
  if (!repair.ok()) return label + "repair failed: " + repair.status().ToString();
  const Counts after = QemuCounts(fixed);
  if (after.exit_code != 0) return label + "qemu-img after qcrash repair: " + ToString(after);
  uint64_t second_writes = 0;
  auto second = RunCheck(fixed, engine::RepairMode::kAll, &second_writes);
  if (!second.ok() || second_writes != 0) {
    return label + "second repair wrote " + std::to_string(second_writes) + " times";
  }
  // Untouched guest clusters keep their content; drops are confined to touched ones.
  const uint64_t cluster_bytes = LayoutOf(image).cluster_bytes;
  const std::set<uint64_t> affected(a.affected_clusters.begin(), a.affected_clusters.end());
  for (const engine::DroppedRange& d : repair->dropped) {
    if (d.table != "active") continue;
    for (uint64_t g = d.guest_offset; g < d.guest_offset + d.length_bytes; g += cluster_bytes) {
      if (!affected.count(g / cluster_bytes)) {
        return label + "repair dropped untouched guest " + HexOffset(g);
      }
    }
  }
  const std::vector<uint8_t> guest = GuestBytes(fixed, dir.File("fixed.raw"));
  if (guest.size() != base.guest.size()) return label + "guest size changed";
  for (uint64_t c = 0; c * cluster_bytes < guest.size(); ++c) {
    if (affected.count(c)) continue;
    if (!std::equal(guest.begin() + c * cluster_bytes, guest.begin() + (c + 1) * cluster_bytes,
                    base.guest.begin() + c * cluster_bytes)) {
      return label + "guest cluster " + std::to_string(c) + " changed by repair";
    }
  }
  // qemu-img repairs; when its own re-check is clean, qcrash agrees.
  const std::string qemu_fixed = dir.File("qemu-fixed.qcow2");
  WriteFileBytes(qemu_fixed, image);
  RunCommand("qemu-img check -r all '" + qemu_fixed + "'");
  const Counts qemu_after = QemuCounts(qemu_fixed);
  const Counts ours_after = OurCounts(qemu_fixed);
  if (qemu_after.exit_code == 0 && ours_after.exit_code != 0) {
    return label + "after qemu-img -r all, qcrash finds " + ToString(ours_after);
  }
  return "";
}

// Every class on every base image, deterministically.
TEST(CheckInterop, EveryCorruptionClassOnEveryBaseImage) {
  int applied_cases = 0;
  for (const Base& base : TheBases().images) {
    for (int c = 0; c < kCorruptionCount; ++c) {
      bool applied = false;
      const std::string failure = CheckOneCase(base, static_cast<Corruption>(c), 1, &applied);
      EXPECT_EQ(failure, "");
      applied_cases += applied;
    }
  }
  EXPECT_GE(applied_cases, 60) << "most classes apply to most bases";
}

// Random base, class and entry.
// Images qemu-img and qemu-io make with several snapshots (deleted ones,
// a resize between them, v2 entries) and several persistent bitmaps
// (granularities, a disabled one, one beside a snapshot) are clean for
// qcrash exactly as for qemu-img, counters included, and a repair of a clean
// image writes nothing. (The v2 and resize cases end the file inside the
// snapshot table, without its padding: qcrash once called that corrupt.)
TEST(CheckInterop, QemuSnapshotAndBitmapImagesAreClean) {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"snapshots",
       "qemu-img create -q -f qcow2 -o cluster_size=512 I 64K && "
       "qemu-io -c 'write -P 0x10 0 1024' I && qemu-img snapshot -c snap1 I && "
       "qemu-io -c 'write -P 0x20 512 1024' I && qemu-img snapshot -c snap2 I && "
       "qemu-io -c 'write -P 0x30 8192 512' I && qemu-img snapshot -c third-snapshot I && "
       "qemu-img snapshot -d snap2 I"},
      {"snapshots-v2",
       "qemu-img create -q -f qcow2 -o cluster_size=512,compat=0.10 I 64K && "
       "qemu-io -c 'write -P 0x11 0 512' I && qemu-img snapshot -c a I && "
       "qemu-io -c 'write -P 0x12 0 512' I && qemu-img snapshot -c b I"},
      {"snapshots-resize",
       "qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=2 I 32K && "
       "qemu-io -c 'write -P 0x13 0 512' I && qemu-img snapshot -c small I && "
       "qemu-img resize -q I 96K && qemu-io -c 'write -P 0x14 65536 512' I && "
       "qemu-img snapshot -c big I"},
      {"bitmaps",
       "qemu-img create -q -f qcow2 -o cluster_size=512 I 64K && "
       "qemu-img bitmap --add -g 512 I fine && qemu-img bitmap --add -g 65536 I coarse && "
       "qemu-img bitmap --add -g 4096 --disable I off && "
       "qemu-io -c 'write -P 0x40 0 2048' -c 'write -P 0x41 40960 512' I"},
      {"bitmap-and-snapshot",
       "qemu-img create -q -f qcow2 -o cluster_size=512 I 64K && "
       "qemu-img bitmap --add -g 1024 I tracked && "
       "qemu-io -c 'write -P 0x50 4096 1024' I && qemu-img snapshot -c s I && "
       "qemu-io -c 'write -P 0x51 0 512' I"},
  };
  for (const auto& [name, script] : cases) {
    SCOPED_TRACE(name);
    const std::string path = dir.File(name + ".qcow2");
    std::string command = script;
    for (size_t at = command.find(" I"); at != std::string::npos; at = command.find(" I", at + 1)) {
      if (at + 2 == command.size() || command[at + 2] == ' ')
        command.replace(at + 1, 1, "'" + path + "'");
    }
    ASSERT_EQ(RunCommand("( " + command + " ) >/dev/null").exit_code, 0) << command;
    const Counts qemu = QemuCounts(path);
    ASSERT_EQ(qemu.exit_code, 0) << ToString(qemu);
    EXPECT_EQ(OurCounts(path), qemu)
        << ToString(OurCounts(path)) << " vs qemu-img " << ToString(qemu);
    const std::vector<uint8_t> before = ReadFileBytes(path);
    uint64_t writes = 0;
    auto repair = RunCheck(path, engine::RepairMode::kAll, &writes);
    ASSERT_TRUE(repair.ok()) << repair.status().ToString();
    EXPECT_EQ(writes, 0u);
    EXPECT_EQ(ReadFileBytes(path), before);
  }
}

RC_GTEST_PROP(CheckInterop, AgreesWithQemuImgAndRepairsClean, ()) {
  const Bases& bases = TheBases();
  const size_t base = *rc::gen::inRange<size_t>(0, bases.images.size());
  const int corruption = *rc::gen::inRange(0, kCorruptionCount);
  const uint64_t choice = *rc::gen::inRange<uint64_t>(0, 1000);
  bool applied = false;
  const std::string failure =
      CheckOneCase(bases.images[base], static_cast<Corruption>(corruption), choice, &applied);
  RC_PRE(applied);
  RC_ASSERT(failure == "");
}

}  // namespace
}  // namespace qcrash::check_test
