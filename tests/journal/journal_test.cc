// Proves the journal's format codecs round-trip and reject hostile bytes
// with Corruption (never UB), and the journal policy's life cycle: commits
// set the journal-dirty bit, close clears it, a crash before sync replays on
// open (idempotently), every commit survives the wrap of a small ring under
// each commit point and recovery, and a cleared journal-valid bit (an old
// tool) makes the engine create a new journal instead of replaying the old one.
#include "engine/journal.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "engine/endian.h"
#include "engine/image.h"
#include "engine/journal_format.h"
#include "engine/memory_device.h"
#include "engine/qcow2_format.h"

namespace qcrash::engine {
namespace {

namespace j = journal;
namespace f = format;

TEST(JournalFormat, HeaderRoundTripsAndRejectsBadChecksum) {
  j::JournalHeader h{64 << 10, 9, 7, 41, 44, j::kVariantByteSum};
  std::vector<uint8_t> bytes = j::EncodeJournalHeader(h);
  auto back = j::DecodeJournalHeader(bytes, 64 << 10);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, h);
  bytes[20] ^= 1;
  EXPECT_TRUE(j::DecodeJournalHeader(bytes, 64 << 10).status().IsCorruption());
}

TEST(JournalFormat, DescriptorBlockRoundTrips) {
  j::DescriptorBlock b;
  b.seq = 9;
  b.nb_data_blocks = 2;
  b.flags = j::kDescriptorFlagContinues;
  j::Descriptor w;
  w.type = j::DescriptorType::kWrite;
  w.writes = {{512, 0x10000, 6}, {1024, 0x20000, 6}};
  j::Descriptor c;
  c.type = j::DescriptorType::kCopy;
  c.copies = {{4096, 0x30000, 0x40000}};
  j::Descriptor r;
  r.type = j::DescriptorType::kRevoke;
  r.revokes = {{4096, 0x50000}};
  j::Descriptor d;
  d.type = j::DescriptorType::kDedupInsert;
  d.opaque = {1, 2, 3, 4, 5};
  b.descriptors = {w, c, r, d};
  auto bytes = j::EncodeDescriptorBlock(b, 512);
  ASSERT_TRUE(bytes.ok());
  auto back = j::DecodeDescriptorBlock(*bytes, 5, 0);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->descriptors, b.descriptors);
  EXPECT_EQ(back->seq, 9u);
}

TEST(JournalFormat, OverlappingCopyAndOutOfTransactionDataAreCorruption) {
  j::DescriptorBlock b;
  b.nb_data_blocks = 1;
  j::Descriptor c;
  c.type = j::DescriptorType::kCopy;
  c.copies = {{4096, 0x30000, 0x30800}};
  b.descriptors = {c};
  auto bytes = j::EncodeDescriptorBlock(b, 512);
  ASSERT_TRUE(bytes.ok());
  EXPECT_TRUE(j::DecodeDescriptorBlock(*bytes, 1, 0).status().IsCorruption());
  j::Descriptor w;
  w.type = j::DescriptorType::kWrite;
  w.writes = {{1024, 0x10000, 2}};  // two blocks of data, only one in the transaction
  b.descriptors = {w};
  bytes = j::EncodeDescriptorBlock(b, 512);
  EXPECT_TRUE(j::DecodeDescriptorBlock(*bytes, 1, 0).status().IsCorruption());
}

// Random bytes behind a valid magic: the decoders never crash, and whatever
// they accept re-encodes to a block they accept again with the same fields
// (so an acceptance is a real decode, not a half-filled struct); garbage
// mostly fails with Corruption (a checksum or a bound), never another code.
TEST(JournalFormat, RandomBytesNeverCrashTheDecoder) {
  std::mt19937 random(7);
  std::vector<uint8_t> block(512);
  int rejected = 0;
  for (int i = 0; i < 20000; ++i) {
    for (auto& b : block) b = static_cast<uint8_t>(random());
    StoreBe32(block.data(), j::kDescriptorMagic);
    if (i % 2) StoreBe32(&block[12], 32), StoreBe32(&block[16], random() % 480);
    const uint32_t index = 1 + random() % 100;
    auto descriptor = j::DecodeDescriptorBlock(block, index, 0);
    if (descriptor.ok()) {
      auto encoded = j::EncodeDescriptorBlock(*descriptor, 512);
      ASSERT_TRUE(encoded.ok()) << encoded.status().ToString();
      auto again = j::DecodeDescriptorBlock(*encoded, index, 0);
      ASSERT_TRUE(again.ok()) << again.status().ToString();
      EXPECT_EQ(again->seq, descriptor->seq);
      EXPECT_EQ(again->flags, descriptor->flags);
      EXPECT_EQ(again->descriptors.size(), descriptor->descriptors.size());
    } else {
      ++rejected;
      EXPECT_EQ(descriptor.status().code(), StatusCode::kCorruption)
          << descriptor.status().ToString();
    }
    StoreBe64(block.data(), j::kHeaderMagic);
    auto header = j::DecodeJournalHeader(block, 512 * (1 + random() % 64));
    if (!header.ok()) {
      ++rejected;
      EXPECT_EQ(header.status().code(), StatusCode::kCorruption) << header.status().ToString();
    }
  }
  EXPECT_GT(rejected, 20000) << "random headers and descriptors should mostly be refused";
}

OpenOptions JournalPolicy() {
  OpenOptions o;
  o.policy = OrderingPolicy::kJournal;
  o.journal.size_bytes = 64 << 10;
  return o;
}

std::unique_ptr<Image> Create(MemoryDevice& device) {
  CreateOptions c;
  c.size_bytes = 8 << 20;
  c.cluster_bits = 12;
  auto image = Image::Create(device, c, JournalPolicy());
  EXPECT_TRUE(image.ok()) << image.status().ToString();
  return std::move(image).value();
}

uint64_t Incompatible(MemoryDevice& device) {
  uint8_t sector[512];
  EXPECT_TRUE(device.Read(0, sector).ok());
  return LoadBe64(&sector[f::kOffIncompatibleFeatures]);
}

TEST(JournalImage, CommitSetsDirtyCloseClearsIt) {
  MemoryDevice device;
  ASSERT_TRUE(Create(device)->Close().ok());
  EXPECT_EQ(Incompatible(device) & f::kIncompatJournalDirty, 0u);
  auto image = std::move(Image::Open(device, JournalPolicy())).value();
  EXPECT_EQ(Incompatible(device) & f::kIncompatJournalDirty, 0u);
  const std::vector<uint8_t> data(4096, 0x5A);
  ASSERT_TRUE(image->Write(0, data).ok());
  ASSERT_TRUE(image->Flush().ok());
  EXPECT_NE(Incompatible(device) & f::kIncompatJournalDirty, 0u);
  ASSERT_TRUE(image->Close().ok());
  EXPECT_EQ(Incompatible(device) & f::kIncompatJournalDirty, 0u);
}

TEST(JournalImage, CrashBeforeSyncReplaysOnOpenIdempotently) {
  MemoryDevice device;
  {
    auto image = Create(device);
    const std::vector<uint8_t> data(4096, 0x5A);
    ASSERT_TRUE(image->Write(4096 * 3, data).ok());
    ASSERT_TRUE(image->Flush().ok());
  }  // crash: no close, nothing synced in place
  const std::vector<uint8_t> crashed = [&] {
    std::vector<uint8_t> all(device.SizeBytes());
    EXPECT_TRUE(device.Read(0, all).ok());
    return all;
  }();
  for (int round = 0; round < 2; ++round) {  // replay twice from the same crash image
    MemoryDevice copy(crashed);
    for (OrderingPolicy policy : {OrderingPolicy::kOrdered, OrderingPolicy::kJournal}) {
      OpenOptions o = JournalPolicy();
      o.policy = policy;
      auto image = Image::Open(copy, o);
      ASSERT_TRUE(image.ok()) << image.status().ToString();
      EXPECT_EQ((*image)->replay_report().replayed, policy == OrderingPolicy::kOrdered);
      std::vector<uint8_t> out(4096);
      ASSERT_TRUE((*image)->Read(4096 * 3, out).ok());
      EXPECT_EQ(out, std::vector<uint8_t>(4096, 0x5A));
      EXPECT_EQ(Incompatible(copy) & f::kIncompatJournalDirty, 0u);
    }
  }
}

TEST(JournalImage, ReadOnlyOpenOfDirtyJournalSeesReplayedState) {
  MemoryDevice device;
  {
    auto image = Create(device);
    const std::vector<uint8_t> data(4096, 0x77);
    ASSERT_TRUE(image->Write(4096 * 9, data).ok());
    ASSERT_TRUE(image->Flush().ok());
  }
  OpenOptions o;
  o.read_only = true;
  auto image = Image::Open(device, o);
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  std::vector<uint8_t> out(4096);
  ASSERT_TRUE((*image)->Read(4096 * 9, out).ok());
  EXPECT_EQ(out, std::vector<uint8_t>(4096, 0x77));
  EXPECT_NE(Incompatible(device) & f::kIncompatJournalDirty, 0u);  // nothing written
}

// Padding transactions (the wrap to block 1) in a crash image's ring, found
// through the journal header extension.
int PaddingTransactions(const std::vector<uint8_t>& image_bytes, const Header& header) {
  for (const HeaderExtension& e : header.unknown_extensions) {
    if (e.type != j::kExtJournal) continue;
    auto location = j::DecodeLocation(e.data, header.cluster_bits, image_bytes.size());
    if (!location.ok()) return -1;
    int padding = 0;
    for (uint64_t at = location->offset_bytes + 512;
         at < location->offset_bytes + location->size_bytes; at += 512) {
      std::span<const uint8_t> block(&image_bytes[at], 512);
      if (j::HasDescriptorMagic(block) && (LoadBe32(&block[24]) & j::kDescriptorFlagPadding))
        ++padding;
    }
    return padding;
  }
  return -1;
}

// Commits one allocating write per round on a 32-block ring; after each
// flush, a copy of the disk (a crash right after the flush returned) must
// replay to every acknowledged write, and the rounds must wrap the ring.
void ExpectEveryCommitReplaysAcrossTheWrap(JournalCommit commit, JournalRecovery recovery) {
  OpenOptions o = JournalPolicy();
  o.journal.size_bytes = 16 << 10;
  o.journal.commit = commit;
  o.journal.recovery = recovery;
  MemoryDevice device;
  CreateOptions c;
  c.size_bytes = 8 << 20;
  c.cluster_bits = 12;
  auto created = Image::Create(device, c, o);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  std::unique_ptr<Image> image = std::move(created).value();
  constexpr int kRounds = 24;
  constexpr uint64_t kStrideBytes = 300 << 10;  // new L2 entries, now and then a new L2 table
  int wrapped_rounds = 0;
  for (int round = 0; round < kRounds; ++round) {
    ASSERT_TRUE(
        image->Write(round * kStrideBytes, std::vector<uint8_t>(4096, uint8_t(round + 1))).ok());
    ASSERT_TRUE(image->Flush().ok());
    MemoryDevice crashed(device.bytes());
    if (PaddingTransactions(crashed.bytes(), image->header()) > 0) ++wrapped_rounds;
    auto reopened = Image::Open(crashed, OpenOptions{});
    ASSERT_TRUE(reopened.ok()) << "round " << round << ": " << reopened.status().ToString();
    for (int k = 0; k <= round; ++k) {
      std::vector<uint8_t> out(4096);
      ASSERT_TRUE((*reopened)->Read(k * kStrideBytes, out).ok());
      ASSERT_EQ(out, std::vector<uint8_t>(4096, uint8_t(k + 1)))
          << "crash after round " << round << ": the write of round " << k << " was lost";
    }
  }
  EXPECT_GT(wrapped_rounds, 0) << "the ring never wrapped: the test proves nothing";
}

// Regression (issue 17): with the commit flag in the descriptor, the padding
// transaction that wraps the ring was written without the flag, so recovery
// stopped at it and lost every transaction committed after the wrap (the
// acknowledged resize of builtin:journal-wrap at --journal size=16k,
// commit=descriptor); with scan-only recovery the flag was never written at
// all. Every commit point with every recovery.
TEST(JournalImage, EveryCommitAfterTheRingWrapsReplays) {
  for (const JournalCommit commit : {JournalCommit::kHeader, JournalCommit::kDescriptorFlag}) {
    for (const JournalRecovery recovery :
         {JournalRecovery::kHeaderBookkeeping, JournalRecovery::kScanOnly}) {
      SCOPED_TRACE(
          std::string(commit == JournalCommit::kHeader ? "commit=header" : "commit=descriptor") +
          (recovery == JournalRecovery::kScanOnly ? ",recovery=scan" : ",recovery=header"));
      ExpectEveryCommitReplaysAcrossTheWrap(commit, recovery);
    }
  }
}

// Many allocating writes between two guest flushes make more metadata than a
// small ring holds: the journal commits early, at operation boundaries, so
// every write succeeds, and a crash right after the flush keeps them all.
TEST(JournalImage, ManyWritesBetweenFlushesFitASmallRing) {
  OpenOptions o = JournalPolicy();
  o.journal.size_bytes = 16 << 10;
  MemoryDevice device;
  CreateOptions c;
  c.size_bytes = 64 << 20;
  c.cluster_bits = 12;
  auto created = Image::Create(device, c, o);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  std::unique_ptr<Image> image = std::move(created).value();
  constexpr int kWrites = 80;
  constexpr uint64_t kStrideBytes = 700 << 10;  // a new L2 table every couple of writes
  for (int k = 0; k < kWrites; ++k) {
    const Status written =
        image->Write(k * kStrideBytes, std::vector<uint8_t>(4096, uint8_t(k + 1)));
    ASSERT_TRUE(written.ok()) << "write " << k << ": " << written.ToString();
  }
  ASSERT_TRUE(image->Flush().ok());
  MemoryDevice crashed(device.bytes());
  auto reopened = Image::Open(crashed, OpenOptions{});
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  for (int k = 0; k < kWrites; ++k) {
    std::vector<uint8_t> out(4096);
    ASSERT_TRUE((*reopened)->Read(k * kStrideBytes, out).ok());
    ASSERT_EQ(out, std::vector<uint8_t>(4096, uint8_t(k + 1))) << "write " << k << " was lost";
  }
}

TEST(JournalImage, ClearedValidBitMeansANewJournalNeverAReplay) {
  MemoryDevice device;
  {
    auto image = Create(device);
    ASSERT_TRUE(image->Close().ok());
  }
  uint8_t sector[512];
  ASSERT_TRUE(device.Read(0, sector).ok());
  StoreBe64(&sector[f::kOffAutoclearFeatures], 0);  // what an old tool does on a read-write open
  ASSERT_TRUE(device.Write(0, sector).ok());
  auto image = Image::Open(device, JournalPolicy());
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  EXPECT_FALSE((*image)->replay_report().replayed);
  EXPECT_NE((*image)->header().autoclear_features & f::kAutoclearJournalValid, 0u);
}

}  // namespace
}  // namespace qcrash::engine
