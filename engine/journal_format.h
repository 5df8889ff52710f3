// The on-disk metadata journal (QCOW2-NOTES §12, engine/FORMAT.md "Journal"):
// the header extension that locates it, the journal header block, descriptor
// blocks and descriptors, and their checksums. Every integer is big-endian.
// Decoding checks every field and names the offset and field of the first
// violation (Status::Corruption); hostile bytes never cause undefined
// behaviour and are never asserted on.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/status.h"

namespace qcrash::engine::journal {

// ---- Header extension (in cluster 0) -------------------------------------------
// type 0x716A726E ("qjrn"), 24 bytes:
//   0..7   journal_offset (cluster aligned, host offset of the journal header block)
//   8..15  journal_size_bytes (a multiple of the block size, header block included)
//  16..19  flags (reserved, zero)
//  20..23  reserved, zero
inline constexpr uint32_t kExtJournal = 0x716A726E;
inline constexpr uint32_t kExtJournalBytes = 24;

struct JournalLocation {
  uint64_t offset_bytes = 0;
  uint64_t size_bytes = 0;
  bool operator==(const JournalLocation&) const = default;
};
std::vector<uint8_t> EncodeLocation(const JournalLocation& location);
Result<JournalLocation> DecodeLocation(std::span<const uint8_t> payload, uint32_t cluster_bits,
                                       uint64_t file_size_bytes);

// ---- Journal header block (block 0) -----------------------------------------------
inline constexpr uint64_t kHeaderMagic = 0x716A6F75726E616CULL;  // "qjournal"
//  0..7   magic          8..11 journal size bytes   12..15 block order
// 16..19  synced_index  20..23 synced_seq          24..27 committed_seq
// 28..31  checksum over the whole block except these 4 bytes
// 32..35  qcrash variant flags (kVariant*)           36..  zero up to the block end
// Every field that changes after formatting sits in the first sector, so a
// header update is one sector write (atomic in the crash model).
inline constexpr uint32_t kHeaderChecksumOffset = 28;
inline constexpr uint32_t kMinBlockOrder = 9;
inline constexpr uint32_t kMaxBlockOrder = 16;  // the 16-bit descriptor size caps it
inline constexpr uint32_t kMaxJournalBytes = uint32_t{1} << 30;
inline constexpr uint32_t kMinJournalBlocks = 4;

// Variant flags: the spec variants of the draft's open questions (docs/journal-variants.md).
inline constexpr uint32_t kVariantCommitFlag =
    1u << 0;  // commit flag in the descriptor (not the header)
inline constexpr uint32_t kVariantScanOnly =
    1u << 1;  // recovery scans the ring; no header bookkeeping
inline constexpr uint32_t kVariantEscape =
    1u << 2;  // escape "qjbk" in data blocks, no blank terminator
inline constexpr uint32_t kVariantNoChecksum = 1u << 3;  // entries carry no checksums
inline constexpr uint32_t kVariantByteSum = 1u
                                            << 4;  // draft's ones'-complement byte sum (else CRC32)
inline constexpr uint32_t kVariantKnown = 0x1F;

struct JournalHeader {
  uint32_t size_bytes = 0;
  uint32_t block_order = 12;
  uint32_t synced_index = 0;  // descriptor of the last synced transaction; 0 = none in the ring
  uint32_t synced_seq = 0;
  uint32_t committed_seq = 0;
  uint32_t variant = 0;
  uint32_t block_bytes() const { return uint32_t{1} << block_order; }
  uint32_t blocks() const { return size_bytes >> block_order; }
  bool operator==(const JournalHeader&) const = default;
};
std::vector<uint8_t> EncodeJournalHeader(const JournalHeader& header);
// `region_bytes`: the size of the area the extension names.
Result<JournalHeader> DecodeJournalHeader(std::span<const uint8_t> block, uint64_t region_bytes);

// ---- Checksums ------------------------------------------------------------------------
// Draft: the ones' complement of the byte sum (mod 2^32). qcrash: zlib's CRC32.
// Both skip the 4-byte checksum field at `skip`.
class Checksum {
 public:
  explicit Checksum(bool byte_sum) : byte_sum_(byte_sum) {}
  void Update(std::span<const uint8_t> bytes, size_t skip = SIZE_MAX);
  uint32_t Final() const;

 private:
  bool byte_sum_;
  uint32_t state_ = 0;
};

// ---- Descriptor block (first block of a transaction) -------------------------------------
inline constexpr uint32_t kDescriptorMagic = 0x716A626B;  // "qjbk"
//  0..3  magic    4..7 checksum (block minus the field, plus all data blocks)
//  8..11 seq     12..15 descriptor start (>= 32)   16..19 descriptor bytes
// 20..23 nb_data_blocks   24..27 flags (kDescriptorFlag*)   28..31 zero
inline constexpr uint32_t kDescriptorChecksumOffset = 4;
inline constexpr uint32_t kDescriptorStart = 32;
inline constexpr uint32_t kDescriptorFlagCommitted = 1u << 0;  // commit-flag variant
inline constexpr uint32_t kDescriptorFlagContinues = 1u << 1;  // the atomic group goes on in seq+1
inline constexpr uint32_t kDescriptorFlagPadding = 1u << 2;    // wraparound padding: nothing to do
// A member of the atomic group begun at an earlier seq (every member but the
// first): scan-only recovery, which finds transactions by checksum alone,
// must never start replaying in the middle of a group whose first members
// were torn or dropped.
inline constexpr uint32_t kDescriptorFlagContinued = 1u << 3;

enum class DescriptorType : uint16_t {
  kNoop = 0,
  kWrite = 1,        // n x {u32 len, u64 target, u32 data_block_idx}
  kCopy = 2,         // n x {u32 len, u64 target, u64 source}
  kRevoke = 3,       // n x {u32 len, u64 offset}
  kDedupInsert = 4,  // opaque payload, kept and replayed as an opaque record
  kDedupDelete = 5,  // opaque payload
  kEscape = 6,       // qcrash: n x {u32 data_block_idx}: a leading "qjbk" was zeroed there
};

struct WriteChunk {
  uint32_t length_bytes = 0;
  uint64_t target_offset = 0;
  uint32_t data_block_index = 0;  // journal block index where the chunk's data starts
  bool operator==(const WriteChunk&) const = default;
};
struct CopyChunk {
  uint32_t length_bytes = 0;
  uint64_t target_offset = 0;
  uint64_t source_offset = 0;
  bool operator==(const CopyChunk&) const = default;
};
struct RevokeRange {
  uint32_t length_bytes = 0;
  uint64_t offset = 0;
  bool operator==(const RevokeRange&) const = default;
};
struct Descriptor {
  DescriptorType type = DescriptorType::kNoop;
  std::vector<WriteChunk> writes;    // kWrite
  std::vector<CopyChunk> copies;     // kCopy
  std::vector<RevokeRange> revokes;  // kRevoke
  std::vector<uint32_t> escapes;     // kEscape
  std::vector<uint8_t> opaque;       // kNoop, kDedup*: payload after the 4-byte common part
  bool operator==(const Descriptor&) const = default;
};

struct DescriptorBlock {
  uint32_t checksum = 0;
  uint32_t seq = 0;
  uint32_t nb_data_blocks = 0;
  uint32_t flags = 0;
  std::vector<Descriptor> descriptors;
  bool operator==(const DescriptorBlock&) const = default;
};

// Bytes a descriptor takes in the block.
uint32_t DescriptorBytes(const Descriptor& descriptor);
// Encodes into one block (checksum field zero: the caller fills it in, since
// it also covers the data blocks). Fails when the descriptors do not fit.
Result<std::vector<uint8_t>> EncodeDescriptorBlock(const DescriptorBlock& block,
                                                   uint32_t block_bytes);
// Decodes a block that starts with the descriptor magic; `at` names its host
// offset in errors. `block_index` is its journal index: write chunks must lie
// inside its data blocks (block_index + 1 .. block_index + nb_data_blocks).
Result<DescriptorBlock> DecodeDescriptorBlock(std::span<const uint8_t> block, uint32_t block_index,
                                              uint64_t at);
bool HasDescriptorMagic(std::span<const uint8_t> block);

}  // namespace qcrash::engine::journal
