// Proves qemu-img commit end to end without QEMU: the engine writes the
// top's data (and zeroes) into a raw or qcow2 base, empties the top so it
// reads the base, keeps it with -d, and flushes the base before the first
// drop (R13; switch commit-empty-before-base-flush after it); the run
// records the backing file of a committing workload as the log's second
// device (M12) and leaves other workloads' logs alone; the crash explorer
// finds the late flush and no false one; the generator's commits are valid
// and leave seeds without a backing file alone; the workload op round-trips
// through JSON and bad ones are one clear error.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/image.h"
#include "engine/memory_device.h"
#include "engine/ordering.h"
#include "properties/explorer.h"
#include "properties/generate.h"
#include "properties/json.h"
#include "properties/runner.h"

namespace qcrash::properties {
namespace {

constexpr uint64_t kSize = 1 << 20;
constexpr uint64_t kCluster = 4096;

// Every device write and flush, in order, from either file.
class Recorder final : public BlockDevice {
 public:
  Recorder(BlockDevice& inner, std::string name, std::vector<std::string>& events)
      : inner_(inner), name_(std::move(name)), events_(events) {}
  Status Read(uint64_t o, std::span<uint8_t> out) override { return inner_.Read(o, out); }
  Status Write(uint64_t o, std::span<const uint8_t> d) override {
    events_.push_back(name_ + " write");
    return inner_.Write(o, d);
  }
  Status WriteFua(uint64_t o, std::span<const uint8_t> d) override { return Write(o, d); }
  Status Flush() override {
    events_.push_back(name_ + " flush");
    return inner_.Flush();
  }
  uint64_t SizeBytes() const override { return inner_.SizeBytes(); }
  Status Resize(uint64_t s, ResizeMode m) override { return inner_.Resize(s, m); }
  DeviceGeometry Geometry() const override { return inner_.Geometry(); }

 private:
  BlockDevice& inner_;
  std::string name_;
  std::vector<std::string>& events_;
};

engine::BackingOpener OpenerFor(BlockDevice& device) {
  return [&device](const std::string&) -> Result<std::unique_ptr<BlockDevice>> {
    return std::unique_ptr<BlockDevice>(std::make_unique<DeviceRef>(device));
  };
}

std::vector<uint8_t> ReadAll(engine::Image& image) {
  std::vector<uint8_t> out(image.size_bytes());
  EXPECT_TRUE(image.Read(0, out).ok());
  return out;
}

// A top over `base` with a whole cluster, a partial one (copy-on-write of
// the base), a zero write and a discard over base data.
std::unique_ptr<engine::Image> MakeTop(MemoryDevice& top, BlockDevice& base,
                                       const std::string& backing_format,
                                       engine::OpenOptions open = {}) {
  engine::CreateOptions create;
  create.size_bytes = kSize;
  create.cluster_bits = 12;
  create.backing_file = "base";
  create.backing_format = backing_format;
  open.open_backing = OpenerFor(base);
  auto image = engine::Image::Create(top, create, open);
  EXPECT_TRUE(image.ok()) << image.status().ToString();
  std::vector<uint8_t> a(2 * kCluster, 0xA1), b(1000, 0xB2);
  EXPECT_TRUE((*image)->Write(0, a).ok());
  EXPECT_TRUE((*image)->Write(3 * kCluster + 100, b).ok());
  EXPECT_TRUE((*image)->WriteZeroes(5 * kCluster, kCluster, false).ok());
  EXPECT_TRUE((*image)->Discard(7 * kCluster, kCluster).ok());
  EXPECT_TRUE((*image)->Flush().ok());
  return std::move(image).value();
}

bool TopMapsNothing(engine::Image& top) {
  auto map = top.Map();
  EXPECT_TRUE(map.ok());
  for (const engine::MapExtent& e : *map) {
    if (e.depth == 0 && e.present) return false;
  }
  return true;
}

TEST(CommitEngine, RawBaseGetsTheDataAndTheEmptiedTopReadsTheSame) {
  MemoryDevice base(std::vector<uint8_t>(kSize, 0x77)), top_bytes;
  auto top = MakeTop(top_bytes, base, "raw");
  const std::vector<uint8_t> before = ReadAll(*top);
  ASSERT_TRUE(top->Commit({}).ok());
  EXPECT_EQ(ReadAll(*top), before);
  EXPECT_EQ(base.bytes(), before) << "the base holds the guest view";
  EXPECT_TRUE(TopMapsNothing(*top));
  EXPECT_EQ(top->stats().flushes_by_rule[static_cast<size_t>(engine::Rule::kBaseBeforeEmpty)], 1u);
  ASSERT_TRUE(top->Close().ok());
  auto check = engine::CheckImage(top_bytes, engine::CheckOptions{});
  ASSERT_TRUE(check.ok());
  for (const engine::Finding& finding : check->findings)
    EXPECT_EQ(finding.severity, engine::Severity::kInfo) << finding.message;
}

TEST(CommitEngine, QcowBaseGetsTheDataAndKeepLeavesTheTop) {
  for (const bool keep : {false, true}) {
    MemoryDevice base_bytes;
    {
      engine::CreateOptions create;
      create.size_bytes = kSize;
      create.cluster_bits = 16;
      auto base = engine::Image::Create(base_bytes, create, {});
      ASSERT_TRUE(base.ok());
      std::vector<uint8_t> old(kSize, 0x55);
      ASSERT_TRUE((*base)->Write(0, old).ok());
      ASSERT_TRUE((*base)->Close().ok());
    }
    MemoryDevice top_bytes;
    auto top = MakeTop(top_bytes, base_bytes, "qcow2");
    const std::vector<uint8_t> before = ReadAll(*top);
    engine::Image::CommitOptions options;
    options.keep_top = keep;
    ASSERT_TRUE(top->Commit(options).ok());
    EXPECT_EQ(ReadAll(*top), before);
    EXPECT_EQ(TopMapsNothing(*top), !keep);
    ASSERT_TRUE(top->Close().ok());
    top.reset();
    engine::OpenOptions read_only;
    read_only.read_only = true;
    auto base = engine::Image::Open(base_bytes, read_only);
    ASSERT_TRUE(base.ok());
    EXPECT_EQ(ReadAll(**base), before) << "keep " << keep;
  }
}

TEST(CommitEngine, WithoutABackingFileOrReadOnlyItIsRefused) {
  MemoryDevice bytes;
  engine::CreateOptions create;
  create.size_bytes = kSize;
  auto image = engine::Image::Create(bytes, create, {});
  ASSERT_TRUE(image.ok());
  const Status no_backing = (*image)->Commit({});
  EXPECT_FALSE(no_backing.ok());
  EXPECT_NE(no_backing.message().find("does not have a backing file"), std::string::npos);
}

// R13: the base's flush comes before the top's first metadata write of the
// emptying; with the switch, after the top's flush.
TEST(CommitEngine, TheBaseIsFlushedBeforeTheTopDropsAnything) {
  for (const bool bug : {false, true}) {
    MemoryDevice base_bytes(std::vector<uint8_t>(kSize, 0x77)), top_bytes;
    std::vector<std::string> events;
    Recorder base(base_bytes, "base", events);
    engine::OpenOptions open;
    open.faults.commit_empty_before_base_flush = bug;
    auto top_image = MakeTop(top_bytes, base, "raw", open);
    top_image.reset();  // crash-free: flushed above
    Recorder top(top_bytes, "top", events);
    open.open_backing = OpenerFor(base);
    auto reopened = engine::Image::Open(top, open);
    ASSERT_TRUE(reopened.ok());
    events.clear();
    ASSERT_TRUE((*reopened)->Commit({}).ok());
    size_t base_flush = events.size(), top_write = events.size(), last_base_write = 0;
    for (size_t i = 0; i < events.size(); ++i) {
      if (events[i] == "base write") last_base_write = i;
      if (events[i] == "base flush" && base_flush == events.size()) base_flush = i;
      if (events[i] == "top write" && top_write == events.size()) top_write = i;
    }
    ASSERT_LT(base_flush, events.size());
    ASSERT_LT(top_write, events.size());
    EXPECT_LT(last_base_write, base_flush);
    if (bug) {
      EXPECT_GT(base_flush, top_write) << "the switch flushes the base first anyway";
    } else {
      EXPECT_LT(base_flush, top_write) << "the top drops a cluster before the base's flush";
    }
  }
}

TEST(CommitRun, TheBackingFileIsTheSecondDeviceOnlyWhenTheWorkloadCommits) {
  auto commit = BuiltinWorkload("commit");
  ASSERT_TRUE(commit.ok());
  EXPECT_TRUE(RecordsBacking(*commit));
  auto run = RunWorkload(*commit, {});
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  ASSERT_TRUE(run->workload_status.ok()) << run->workload_status.ToString();
  EXPECT_TRUE(run->timeline->has_second_device());
  ASSERT_TRUE(run->data_initial);
  EXPECT_EQ(run->data_initial->SizeBytes(), commit->image.size_bytes);
  // Without a commit the backing file stays the immutable one: no second device.
  auto backing = BuiltinWorkload("backing");
  ASSERT_TRUE(backing.ok());
  EXPECT_FALSE(RecordsBacking(*backing));
  auto plain = RunWorkload(*backing, {});
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->timeline->has_second_device());
  EXPECT_FALSE(plain->data_initial);
}

TEST(CommitExplorer, CleanUnderEveryPolicyAndTheLateBaseFlushIsCaught) {
  auto workload = BuiltinWorkload("commit");
  ASSERT_TRUE(workload.ok());
  for (const engine::OrderingPolicy policy :
       {engine::OrderingPolicy::kWritethrough, engine::OrderingPolicy::kOrdered,
        engine::OrderingPolicy::kLazy, engine::OrderingPolicy::kExtent,
        engine::OrderingPolicy::kJournal}) {
    ExploreConfig config;
    config.workload = *workload;
    config.run.open.policy = policy;
    config.enumerator.kind = sim::EnumeratorKind::kDropOne;
    auto report = Explore(config);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report->violating_states, 0u) << engine::PolicyName(policy);
  }
  ExploreConfig config;
  config.workload = *workload;
  config.run.open.faults.commit_empty_before_base_flush = true;
  config.enumerator.kind = sim::EnumeratorKind::kDropOne;
  auto report = Explore(config);
  ASSERT_TRUE(report.ok());
  EXPECT_GT(report->violating_states, 0u);
}

TEST(CommitGenerate, SeedsWithABackingFileGetCommitsAndTheirWorkloadsAreValid) {
  size_t committing = 0, explored = 0;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    const GeneratedCase c = GenerateCase(seed, 0, engine::OrderingPolicy::kOrdered);
    ASSERT_TRUE(ValidateWorkload(c.workload).ok()) << "seed " << seed;
    if (!RecordsBacking(c.workload)) continue;
    EXPECT_TRUE(c.workload.backing);
    ++committing;
    if (explored >= 4) continue;
    ++explored;
    ExploreConfig config;
    config.workload = c.workload;
    config.enumerator.kind = sim::EnumeratorKind::kEpochs;
    auto report = Explore(config);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report->violating_states, 0u) << "seed " << seed;
  }
  EXPECT_GT(committing, 5u);
}

TEST(CommitWorkload, JsonRoundTripAndOneClearErrorPerBadOp) {
  auto workload = BuiltinWorkload("commit");
  ASSERT_TRUE(workload.ok());
  auto decoded = WorkloadFromJson(WorkloadToJson(*workload));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->ops, workload->ops);
  bool kept = false;
  for (const GuestOp& op : decoded->ops) kept |= op.kind == OpKind::kCommit && op.keep;
  EXPECT_TRUE(kept);
  nlohmann::json j = WorkloadToJson(*workload);
  j["backing"] = false;
  auto no_backing = WorkloadFromJson(j);
  ASSERT_FALSE(no_backing.ok());
  EXPECT_NE(no_backing.status().message().find("a commit needs a backing file"), std::string::npos);
  j = WorkloadToJson(*workload);
  j["ops"][0]["keep"] = true;
  auto keep_on_write = WorkloadFromJson(j);
  ASSERT_FALSE(keep_on_write.ok());
  EXPECT_NE(keep_on_write.status().message().find("only a commit takes 'keep'"), std::string::npos);
  j = WorkloadToJson(*workload);
  j["ops"][6]["keep"] = "yes";
  auto bad_keep = WorkloadFromJson(j);
  ASSERT_FALSE(bad_keep.ok());
  EXPECT_NE(bad_keep.status().message().find("'keep'"), std::string::npos);
}

}  // namespace
}  // namespace qcrash::properties
