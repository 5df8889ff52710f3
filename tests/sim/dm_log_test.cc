// The dm-log-writes importer (sim/dm_log.h): each entry kind maps onto the
// sim's write log; a truncated or foreign log is one error naming the entry
// and its offset.
#include "sim/dm_log.h"

#include <gtest/gtest.h>

#include <cstring>

namespace qcrash::sim {
namespace {

void Put64(std::vector<uint8_t>& out, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

// A dm-log-writes log, built entry by entry as a writer lays it out.
class LogBuilder {
 public:
  explicit LogBuilder(uint32_t sector = 512) : sector_(sector), bytes_(sector, 0) {
    Put64(bytes_, 0, kDmLogMagic);
    Put64(bytes_, 8, 1);
    for (int i = 0; i < 4; ++i) bytes_[24 + i] = static_cast<uint8_t>(sector >> (8 * i));
  }
  void Entry(uint64_t sector, uint64_t sectors, uint64_t flags, uint8_t fill = 0,
             const std::string& mark = "") {
    const size_t at = bytes_.size();
    bytes_.resize(at + sector_, 0);
    Put64(bytes_, at, sector);
    Put64(bytes_, at + 8, sectors);
    Put64(bytes_, at + 16, flags);
    Put64(bytes_, at + 24, mark.size());
    std::memcpy(bytes_.data() + at + 32, mark.data(), mark.size());
    if (!(flags & (kDmLogDiscard | kDmLogMark)))
      bytes_.resize(bytes_.size() + sectors * sector_, fill);
    Put64(bytes_, 16, ++count_);
  }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  uint32_t sector_;
  std::vector<uint8_t> bytes_;
  uint64_t count_ = 0;
};

TEST(DmLog, EachEntryKindBecomesItsRecords) {
  LogBuilder b;
  b.Entry(2, 1, 0, 0xab);                        // a write
  b.Entry(0, 0, kDmLogFlush);                    // a flush
  b.Entry(0, 0, kDmLogMark, 0, "op 1");          // a mark
  b.Entry(4, 2, kDmLogFua, 0xcd);                // a FUA write
  b.Entry(8, 1, kDmLogDiscard);                  // a discard: zeroes
  b.Entry(6, 1, kDmLogFlush | kDmLogFua, 0xee);  // preflush + FUA write
  auto imported = ImportDmLog(b.bytes(), 1 << 20);
  ASSERT_TRUE(imported.ok()) << imported.status().ToString();
  const WriteLog& log = imported->log;
  ASSERT_EQ(log.size(), 6u);
  EXPECT_EQ(log.record(0).kind, RecordKind::kWrite);
  EXPECT_EQ(log.record(0).offset_bytes, 1024u);
  EXPECT_EQ(log.DataOf(log.record(0))[511], 0xab);
  EXPECT_EQ(log.record(1).kind, RecordKind::kFlush);
  EXPECT_EQ(log.record(2).kind, RecordKind::kWriteFua);
  EXPECT_EQ(log.record(2).length_bytes, 1024u);
  EXPECT_EQ(log.record(3).kind, RecordKind::kWrite);
  EXPECT_EQ(log.record(3).offset_bytes, 4096u);
  EXPECT_EQ(log.DataOf(log.record(3))[0], 0);
  EXPECT_EQ(log.record(4).kind, RecordKind::kFlush);
  EXPECT_EQ(log.record(5).kind, RecordKind::kWriteFua);
  ASSERT_EQ(imported->marks.size(), 1u);
  EXPECT_EQ(imported->marks[0].name, "op 1");
  EXPECT_EQ(imported->marks[0].records, 2u);
  EXPECT_EQ((imported->records_after), (std::vector<uint64_t>{1, 2, 2, 3, 4, 6}));
}

TEST(DmLog, OnlyTheSuperblocksCountIsImported) {
  LogBuilder b;
  b.Entry(0, 1, 0, 1);
  b.Entry(1, 1, 0, 2);
  Put64(b.bytes(), 16, 1);  // a writer that had not yet counted the second entry
  auto imported = ImportDmLog(b.bytes(), 0);
  ASSERT_TRUE(imported.ok());
  EXPECT_EQ(imported->log.size(), 1u);
}

TEST(DmLog, ATruncatedLogNamesTheEntryAndItsOffset) {
  LogBuilder b;
  b.Entry(0, 1, 0, 1);
  b.Entry(1, 8, 0, 2);
  std::vector<uint8_t> cut(b.bytes().begin(), b.bytes().end() - 100);
  auto imported = ImportDmLog(cut, 0);
  ASSERT_FALSE(imported.ok());
  EXPECT_NE(imported.status().message().find("entry 1 at offset 1536: truncated"),
            std::string::npos)
      << imported.status().ToString();
  cut.resize(1600);  // inside entry 1's header sector: its data is missing
  EXPECT_FALSE(ImportDmLog(cut, 0).ok());
  cut.resize(1550);  // the entry header itself cut
  imported = ImportDmLog(cut, 0);
  ASSERT_FALSE(imported.ok());
  EXPECT_NE(imported.status().message().find("entry 1 at offset 1536"), std::string::npos)
      << imported.status().ToString();
}

TEST(DmLog, ForeignOrHostileFieldsAreOneError) {
  std::vector<uint8_t> short_file(10, 0);
  EXPECT_FALSE(ImportDmLog(short_file, 0).ok());
  LogBuilder wrong_magic;
  Put64(wrong_magic.bytes(), 0, 0x1234);
  EXPECT_NE(ImportDmLog(wrong_magic.bytes(), 0).status().message().find("magic"),
            std::string::npos);
  LogBuilder flags;
  flags.Entry(0, 0, 1u << 7);
  EXPECT_NE(ImportDmLog(flags.bytes(), 0)
                .status()
                .message()
                .find("entry 0 at offset 512: unknown flags 0x80"),
            std::string::npos);
  LogBuilder huge_discard;
  huge_discard.Entry(0, uint64_t{1} << 40, kDmLogDiscard);
  EXPECT_FALSE(ImportDmLog(huge_discard.bytes(), 0).ok());
  LogBuilder overflow;
  overflow.Entry(UINT64_MAX / 512, 4, kDmLogDiscard);
  EXPECT_FALSE(ImportDmLog(overflow.bytes(), 0).ok());
  LogBuilder counted;
  Put64(counted.bytes(), 16, UINT64_MAX);  // counts entries the file does not hold
  EXPECT_NE(
      ImportDmLog(counted.bytes(), 0).status().message().find("entry 0 at offset 512: truncated"),
      std::string::npos);
  LogBuilder sector;
  sector.bytes()[24] = 3;  // sectorsize 515
  EXPECT_NE(ImportDmLog(sector.bytes(), 0).status().message().find("sectorsize"),
            std::string::npos);
}

}  // namespace
}  // namespace qcrash::sim
