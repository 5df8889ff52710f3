// Proves the amend workload op does what it says: the built-in `amend` runs
// to the end through every refcount width and compat change it names, with
// the header showing each one and the image clean; amend ops survive JSON;
// bad ones are refused with the field named; generated workloads draw
// amends from a stream of their own (never under the journal policy, no
// downgrade under the lazy policy) and run to the end.
#include <gtest/gtest.h>

#include "engine/check.h"
#include "engine/image.h"
#include "engine/memory_device.h"
#include "properties/generate.h"
#include "properties/json.h"
#include "properties/runner.h"
#include "properties/workload.h"

namespace qcrash::properties {
namespace {

TEST(AmendWorkload, BuiltinWalksEveryChangeAndEndsClean) {
  auto workload = BuiltinWorkload("amend");
  ASSERT_TRUE(workload.ok());
  MemoryDevice backing;
  const std::vector<uint8_t> bytes = BackingFileBytes(*workload);
  ASSERT_TRUE(backing.Write(0, bytes).ok());
  engine::OpenOptions open;
  open.open_backing = [&backing](const std::string&) -> Result<std::unique_ptr<BlockDevice>> {
    return std::unique_ptr<BlockDevice>(std::make_unique<DeviceRef>(backing));
  };
  MemoryDevice device;
  auto created = engine::Image::Create(device, workload->image, open);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  std::unique_ptr<engine::Image> image = std::move(created).value();
  std::vector<uint32_t> widths, versions;
  for (size_t i = 0; i < workload->ops.size(); ++i) {
    const GuestOp& op = workload->ops[i];
    const Status status = RunGuestOp(*image, op, i + 1);
    ASSERT_TRUE(status.ok()) << DescribeOp(op) << ": " << status.ToString();
    if (op.kind != OpKind::kAmend) continue;
    const engine::Header& h = image->header();
    if (op.amend.refcount_bits != 0) {
      EXPECT_EQ(1u << h.refcount_order, op.amend.refcount_bits) << DescribeOp(op);
      widths.push_back(op.amend.refcount_bits);
    }
    if (op.amend.version != 0) {
      EXPECT_EQ(h.version, op.amend.version) << DescribeOp(op);
      versions.push_back(h.version);
    }
    if (op.amend.lazy_refcounts) {
      EXPECT_EQ((h.compatible_features & 1) != 0, *op.amend.lazy_refcounts) << DescribeOp(op);
    }
  }
  // Up (16 -> 64), down to 2 (a snapshot's refcount of 2 fits), back, and
  // a downgrade and upgrade.
  EXPECT_EQ(widths, (std::vector<uint32_t>{64, 2, 16}));
  EXPECT_EQ(versions, (std::vector<uint32_t>{2, 3}));
  image.reset();
  engine::CheckOptions check{engine::RepairMode::kNone};
  auto report = engine::CheckImage(device, check);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->corruptions, 0u);
  EXPECT_EQ(report->leaks, 0u);
}

TEST(AmendWorkload, OpsRoundTripThroughJsonAndBadOnesNameTheField) {
  auto workload = BuiltinWorkload("amend");
  ASSERT_TRUE(workload.ok());
  auto back = WorkloadFromJson(WorkloadToJson(*workload));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->ops, workload->ops);
  const auto refused = [](const char* op_json) {
    const std::string text =
        std::string(R"({"image": {"size": 1048576}, "ops": [)") + op_json + "]}";
    return WorkloadFromJson(nlohmann::json::parse(text)).status().ToString();
  };
  EXPECT_NE(refused(R"({"op": "amend", "compat": "2"})").find("'compat'"), std::string::npos);
  EXPECT_NE(refused(R"({"op": "amend", "refcount_bits": 128})").find("'refcount_bits'"),
            std::string::npos);
  EXPECT_NE(refused(R"({"op": "amend", "refcount_bits": 3})").find("power of two"),
            std::string::npos);
  EXPECT_NE(refused(R"({"op": "amend", "lazy_refcounts": 1})").find("'lazy_refcounts'"),
            std::string::npos);
  EXPECT_NE(refused(R"({"op": "amend"})").find("changes compat"), std::string::npos);
  EXPECT_NE(refused(R"({"op": "amend", "compat": "0.10", "refcount_bits": 64})")
                .find("requires refcount_bits=16"),
            std::string::npos);
  EXPECT_EQ(refused(R"({"op": "amend", "compat": "0.10"})"), "OK");
}

TEST(GeneratedAmends, ComeFromTheirOwnStreamAndRunToTheEnd) {
  int with_amend = 0, downgrades = 0, ran = 0, amends_completed = 0;
  for (const engine::OrderingPolicy policy :
       {engine::OrderingPolicy::kOrdered, engine::OrderingPolicy::kLazy,
        engine::OrderingPolicy::kExtent, engine::OrderingPolicy::kJournal}) {
    for (uint64_t seed = 1; seed <= 200; ++seed) {
      const GeneratedCase c = GenerateCase(seed, 40, policy);
      const bool feature = c.features.find("amend") != std::string::npos;
      bool any = false;
      for (const GuestOp& op : c.workload.ops) {
        if (op.kind != OpKind::kAmend) continue;
        any = true;
        EXPECT_NE(policy, engine::OrderingPolicy::kJournal) << c.workload.name;
        if (op.amend.version == 2) {
          ++downgrades;
          EXPECT_NE(policy, engine::OrderingPolicy::kLazy) << c.workload.name;
        }
      }
      EXPECT_TRUE(feature || !any) << c.workload.name;
      ASSERT_TRUE(ValidateWorkload(c.workload).ok()) << c.workload.name;
      with_amend += any;
      if (any && ran < 40) {
        ++ran;
        auto run = RunWorkload(c.workload, c.run);
        ASSERT_TRUE(run.ok()) << c.workload.name << ": " << run.status().ToString();
        // (A generated case may stop at another feature's refusal, such as
        // a compressed write with a data file; never at an amend.)
        const std::string why = run->workload_status.ToString();
        EXPECT_TRUE(run->workload_status.ok() || why.find("(amend") == std::string::npos)
            << c.workload.name << " (" << c.features << "): " << why;
        amends_completed += run->workload_status.ok();
      }
    }
  }
  EXPECT_GT(with_amend, 50);
  EXPECT_GT(downgrades, 5);
  EXPECT_GT(amends_completed, 30);
}

}  // namespace
}  // namespace qcrash::properties
