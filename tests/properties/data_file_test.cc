// Proves the external data file end to end without QEMU: the header
// extension round-trips and a hostile one is one clear error; the engine
// puts guest data in the data file at host offset = guest offset and
// flushes it before the L2 entry; the simulated disk keeps the two files'
// flushes apart (a flush of one makes nothing of the other durable, M11);
// the crash explorer finds the missing flush (data-file-no-flush) and not
// a false one; the generator's data-file feature leaves other seeds alone.
#include <gtest/gtest.h>

#include <cstring>

#include "engine/header.h"
#include "engine/image.h"
#include "engine/memory_device.h"
#include "engine/qcow2_format.h"
#include "properties/explorer.h"
#include "properties/generate.h"
#include "properties/runner.h"
#include "sim/crash_view.h"
#include "sim/sim_disk.h"

namespace qcrash::properties {
namespace {

namespace f = engine::format;

engine::CreateOptions DataFileImage(bool raw) {
  engine::CreateOptions options;
  options.size_bytes = 1 << 20;
  options.cluster_bits = 12;
  options.data_file = "disk.data";
  options.data_file_raw = raw;
  return options;
}

TEST(DataFileHeader, ExtensionAndBitsRoundTrip) {
  MemoryDevice image, data(std::vector<uint8_t>(1 << 20));
  engine::OpenOptions open;
  open.open_data_file = DataFileOpenerFor(data);
  auto created = engine::Image::Create(image, DataFileImage(true), open);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ASSERT_TRUE((*created)->Close().ok());
  auto header = engine::ReadHeader(image);
  ASSERT_TRUE(header.ok()) << header.status().ToString();
  EXPECT_EQ(header->data_file, "disk.data");
  EXPECT_TRUE(header->has_data_file());
  EXPECT_TRUE(header->data_file_raw());
  EXPECT_TRUE(header->incompatible_features & f::kIncompatDataFile);
  EXPECT_TRUE(header->autoclear_features & f::kAutoclearDataFileRaw);
}

TEST(DataFileHeader, HostileNameLengthIsOneCorruptionNamingTheField) {
  MemoryDevice image, data(std::vector<uint8_t>(1 << 20));
  engine::OpenOptions open;
  open.open_data_file = DataFileOpenerFor(data);
  ASSERT_TRUE(engine::Image::Create(image, DataFileImage(false), open).ok());
  std::vector<uint8_t> cluster0(4096);
  ASSERT_TRUE(image.Read(0, cluster0).ok());
  // Find the extension and give it a zero, then a huge, length.
  size_t at = 112;
  while (at + 8 <= cluster0.size()) {
    uint32_t type = 0, length = 0;
    for (int i = 0; i < 4; ++i) type = type << 8 | cluster0[at + i];
    for (int i = 4; i < 8; ++i) length = length << 8 | cluster0[at + i];
    if (type == f::kExtDataFile) break;
    at += 8 + ((length + 7) & ~7u);
  }
  ASSERT_LT(at + 8, cluster0.size()) << "no data file extension";
  for (const uint32_t bad : {0u, 2000u, 0xFFFFFFFFu}) {
    std::vector<uint8_t> damaged = cluster0;
    for (int i = 0; i < 4; ++i) damaged[at + 4 + i] = static_cast<uint8_t>(bad >> (24 - 8 * i));
    auto decoded = engine::DecodeHeader(damaged, damaged.size());
    ASSERT_FALSE(decoded.ok()) << bad;
    EXPECT_NE(decoded.status().ToString().find("length"), std::string::npos)
        << decoded.status().ToString();
  }
  // The bit without the extension: refused, never guessed.
  std::vector<uint8_t> no_name = cluster0;
  no_name[at] = 0x12;  // another (unknown) extension type
  auto decoded = engine::DecodeHeader(no_name, no_name.size());
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.status().ToString().find("external data file"), std::string::npos)
      << decoded.status().ToString();
  // Without a way to open the data file the image does not open.
  EXPECT_FALSE(engine::Image::Open(image, engine::OpenOptions{}).ok());
}

TEST(DataFileEngine, GuestDataLivesInTheDataFileAtTheGuestOffset) {
  MemoryDevice image, data(std::vector<uint8_t>(1 << 20));
  engine::OpenOptions open;
  open.open_data_file = DataFileOpenerFor(data);
  auto created = engine::Image::Create(image, DataFileImage(false), open);
  ASSERT_TRUE(created.ok());
  std::vector<uint8_t> bytes(4096, 0xAB);
  ASSERT_TRUE((*created)->Write(12288, bytes).ok());
  ASSERT_TRUE((*created)->Close().ok());
  std::vector<uint8_t> in_data(4096);
  ASSERT_TRUE(data.Read(12288, in_data).ok());
  EXPECT_EQ(in_data, bytes);
  // The image file holds metadata only: no cluster of it carries the data.
  const std::vector<uint8_t>& file = image.bytes();
  for (size_t at = 0; at + 4096 <= file.size(); at += 4096) {
    EXPECT_NE(std::memcmp(&file[at], bytes.data(), 4096), 0) << "image cluster at " << at;
  }
  auto map = (*created)->Map();
  ASSERT_TRUE(map.ok());
  bool found = false;
  for (const engine::MapExtent& e : *map) found |= e.data && e.start == 12288 && e.offset == 12288;
  EXPECT_TRUE(found);
}

// Every device flush and write, in order, from either file.
class Recorder final : public BlockDevice {
 public:
  Recorder(BlockDevice& inner, std::string name, std::vector<std::string>& events)
      : inner_(inner), name_(std::move(name)), events_(events) {}
  Status Read(uint64_t o, std::span<uint8_t> out) override { return inner_.Read(o, out); }
  Status Write(uint64_t o, std::span<const uint8_t> d) override {
    events_.push_back(name_ + " write " + std::to_string(o));
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

// R12: the L2 write-back that maps a newly written data cluster comes after
// a flush of the data file; with data-file-no-flush it does not.
TEST(DataFileEngine, TheDataFileIsFlushedBeforeTheL2EntryNamingItsCluster) {
  for (const bool bug : {false, true}) {
    MemoryDevice image_bytes, data_bytes(std::vector<uint8_t>(1 << 20));
    std::vector<std::string> events;
    Recorder image(image_bytes, "image", events), data(data_bytes, "data", events);
    engine::OpenOptions open;
    open.open_data_file = DataFileOpenerFor(data);
    auto created = engine::Image::Create(image, DataFileImage(false), open);
    ASSERT_TRUE(created.ok());
    std::vector<uint8_t> first(4096, 1), second(4096, 2);
    ASSERT_TRUE((*created)->Write(0, first).ok());
    ASSERT_TRUE((*created)->Close().ok());
    open.faults.data_file_no_flush = bug;
    auto image_open = engine::Image::Open(image, open);
    ASSERT_TRUE(image_open.ok());
    events.clear();
    // A second cluster of the same L2 table: no refcount changes, so only
    // R12 orders its data before its L2 entry.
    ASSERT_TRUE((*image_open)->Write(8192, second).ok());
    ASSERT_TRUE((*image_open)->Flush().ok());
    size_t data_write = events.size(), data_flush = events.size(), l2_write = events.size();
    for (size_t i = 0; i < events.size(); ++i) {
      if (events[i] == "data write 8192" && data_write == events.size()) data_write = i;
      if (events[i] == "data flush" && data_flush == events.size() && i > data_write)
        data_flush = i;
      if (events[i].rfind("image write", 0) == 0 && l2_write == events.size()) l2_write = i;
    }
    ASSERT_LT(data_write, events.size());
    ASSERT_LT(l2_write, events.size());
    if (bug) {
      EXPECT_GT(data_flush, l2_write) << "the bug switch flushes the data file first anyway";
    } else {
      EXPECT_LT(data_flush, l2_write) << "the L2 entry is written before the data file's flush";
    }
  }
}

// M11: a flush of one device makes nothing of the other durable, and a
// crash view of each device shows its own pending choices.
TEST(DataFileSim, AFlushOfOneDeviceLeavesTheOthersWritesPending) {
  sim::SimDisk disk(sim::SimDiskOptions{.initial_size_bytes = 4096});
  BlockDevice& second = disk.AttachSecondDevice(std::make_shared<const sim::ChunkedImage>(4096));
  const std::vector<uint8_t> a(512, 0xAA), b(512, 0xBB);
  ASSERT_TRUE(second.Write(0, a).ok());  // record 0: data file, pending
  ASSERT_TRUE(disk.Write(0, b).ok());    // record 1: image, pending
  ASSERT_TRUE(disk.Flush().ok());        // record 2: the image's flush only
  const sim::CrashTimeline timeline = disk.Timeline();
  ASSERT_TRUE(timeline.has_second_device());
  const auto point = timeline.Point(3);
  // The image's write is durable; the data file's is still pending.
  ASSERT_EQ(point->pending.size(), 1u);
  const uint64_t data_sector = sim::kSecondDeviceBaseBytes / 512;
  EXPECT_EQ(point->pending[0].sector, data_sector);
  const sim::CrashState lost{3, {{data_sector, sim::ChoiceKind::kVersion, 0, 0, 0}}};
  auto image_view = sim::CrashTimeline::BuildView(point, lost);
  auto data_view = sim::CrashTimeline::SecondDeviceView(point, lost);
  ASSERT_TRUE(image_view.ok() && data_view.ok());
  std::vector<uint8_t> got(512);
  ASSERT_TRUE((*image_view)->Read(0, got).ok());
  EXPECT_EQ(got, b);
  ASSERT_TRUE((*data_view)->Read(0, got).ok());
  EXPECT_EQ(got, std::vector<uint8_t>(512, 0)) << "the data file's write was dropped";
  ASSERT_TRUE(second.Flush().ok());  // record 3: now the data file's
  EXPECT_TRUE(disk.Timeline().Point(4)->pending.empty());
  // The log round-trips with its second device.
  auto decoded = sim::WriteLog::Decode(disk.log().Encode());
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(sim::RecordDevice(decoded->record(3)), 1u);
  EXPECT_EQ(sim::RecordDevice(decoded->record(2)), 0u);
}

TEST(DataFileExplorer, CleanUnderEveryPolicyAndTheMissingFlushIsCaught) {
  for (const char* name : {"data-file", "data-file-raw"}) {
    auto workload = BuiltinWorkload(name);
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
      EXPECT_EQ(report->violating_states, 0u) << name << " " << engine::PolicyName(policy);
    }
  }
  auto workload = BuiltinWorkload("data-file");
  ExploreConfig config;
  config.workload = *workload;
  config.run.open.faults.data_file_no_flush = true;
  config.enumerator.kind = sim::EnumeratorKind::kDropOne;
  auto report = Explore(config);
  ASSERT_TRUE(report.ok());
  EXPECT_GT(report->violating_states, 0u);
}

TEST(DataFileGenerate, SomeSeedsGetADataFileAndTheirWorkloadsAreValid) {
  size_t plain = 0, raw = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const GeneratedCase c = GenerateCase(seed, 0, engine::OrderingPolicy::kOrdered);
    ASSERT_TRUE(ValidateWorkload(c.workload).ok()) << "seed " << seed;
    if (c.workload.image.data_file.empty()) continue;
    (c.workload.image.data_file_raw ? raw : plain) += 1;
    EXPECT_FALSE(c.workload.backing) << "seed " << seed;
  }
  EXPECT_GT(plain, 5u);
  EXPECT_GT(raw, 5u);
}

}  // namespace
}  // namespace qcrash::properties
