// Helpers every fuzz target shares: a byte reader that turns fuzz input into
// choices, the memory and time bounds targets run under, and the one way a
// target reports a broken property (print, then abort).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/memory_device.h"
#include "engine/options.h"
#include "engine/status.h"

#if QCRASH_FUZZ_HAS_CHECK
#include "engine/check.h"
#endif

namespace qcrash::fuzz {

// A hostile image may grow the device (writes past the end, refcount table
// growth) but never past this: NoSpace instead of exhausting memory.
inline constexpr uint64_t kMaxDeviceBytes = uint64_t{64} << 20;
// Guest clusters read from the start of the disk; past them the guest view
// is sampled (the last cluster, the mapped ones), so a 2^55-byte virtual
// disk costs about what a small one does.
inline constexpr uint64_t kMaxHeadClusters = 128;
// Clusters and L2 tables visited through the image's own L1/L2 tables.
inline constexpr uint64_t kMaxMappedVisits = 64;
// Map() walks every guest cluster: only call it on disks this small.
inline constexpr uint64_t kMaxMapClusters = uint64_t{1} << 14;

// Reads fixed-width choices from the front of the input; past the end every
// read returns zero, so any input decodes to something.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  explicit ByteReader(std::span<const uint8_t> bytes) : ByteReader(bytes.data(), bytes.size()) {}

  uint8_t U8();
  uint16_t U16();
  uint32_t U32();
  uint64_t U64();
  bool Bool() { return (U8() & 1) != 0; }
  // A value in [0, bound) (bound > 0).
  uint64_t Below(uint64_t bound) { return bound <= 1 ? 0 : U64() % bound; }
  // The bytes not read yet.
  std::span<const uint8_t> Rest() const { return {data_ + pos_, size_ - pos_}; }
  size_t remaining() const { return size_ - pos_; }
  bool empty() const { return pos_ >= size_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// An input made of an image followed by an operation trailer: the last byte
// n says how many 8-byte operation records precede it (n % 32). Keeping the
// image first lets the qcow2 mutator find the header at offset 0.
struct ImageAndTrailer {
  std::span<const uint8_t> image;
  std::span<const uint8_t> trailer;  // n * 8 bytes
};
inline constexpr size_t kTrailerRecordBytes = 8;
inline constexpr size_t kMaxTrailerRecords = 32;
ImageAndTrailer SplitTrailer(const uint8_t* data, size_t size);

// A memory device holding `image`, bounded by kMaxDeviceBytes.
std::unique_ptr<MemoryDevice> MakeDevice(std::span<const uint8_t> image);

// Small caches, so eviction paths run on tiny images too.
engine::OpenOptions SmallOpenOptions(bool read_only);

// Reads the guest view the fuzz target is allowed to see: the first
// kMaxHeadClusters, the last cluster, and every cluster an allocated L2
// entry maps (walking the image's own L1/L2 tables from the device, within a
// budget). Errors from the engine are fine; crashes and UB are not.
void ReadGuestView(BlockDevice& device, engine::OpenOptions options);

// Prints the property that failed and aborts: libFuzzer saves the input.
[[noreturn]] void Fail(const std::string& property, const std::string& detail);

#if QCRASH_FUZZ_HAS_CHECK
// "leaks=1 corruptions=2 ...; first findings: ..." for Fail() messages.
std::string DescribeReport(const engine::CheckReport& report);
// True when the report shows no corruption, leak or check error.
bool IsClean(const engine::CheckReport& report);

// What `info` lists (engine/snapshot_table.h): the snapshot table and the
// bitmap directory decode or fail with a status; every entry starts inside
// the file.
void TablesListInsideTheFile(std::span<const uint8_t> image);

// The properties of check_fuzzer: a check without repair of `image` (on a
// device of its own) writes no byte.
void CheckWritesNothing(std::span<const uint8_t> image);
// The properties of repair_fuzzer (I7): after `check -r all` of `image`, check
// is clean (a refcount overflow excepted: it names its remedy, a wider
// refcount_order) and a second repair writes nothing; the repaired guest view
// then reads without crashing.
void RepairLeavesCleanImage(std::span<const uint8_t> image);
// Persistent bitmaps through a write session (engine/bitmaps.cc): on
// `image` as it is, a read-write open, a write and a close fail or succeed
// without crashing; on the repaired image, they leave check clean and
// every bitmap that read before and is not in_use readable.
void BitmapsSurviveAWriteSession(std::span<const uint8_t> image);
#endif

}  // namespace qcrash::fuzz
