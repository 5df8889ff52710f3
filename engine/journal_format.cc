// Encoding and bounds-checked decoding of the journal's on-disk structures.
#include "engine/journal_format.h"

#include <zlib.h>

#include <algorithm>

#include "engine/endian.h"

namespace qcrash::engine::journal {

namespace {

Status Bad(uint64_t at, const std::string& field, const std::string& why) {
  return Status::Corruption("journal " + field + " at " + HexOffset(at) + ": " + why);
}

}  // namespace

std::vector<uint8_t> EncodeLocation(const JournalLocation& location) {
  std::vector<uint8_t> out(kExtJournalBytes, 0);
  StoreBe64(&out[0], location.offset_bytes);
  StoreBe64(&out[8], location.size_bytes);
  return out;
}

Result<JournalLocation> DecodeLocation(std::span<const uint8_t> payload, uint32_t cluster_bits,
                                       uint64_t file_size_bytes) {
  if (payload.size() < kExtJournalBytes) {
    return Status::Corruption("journal header extension: length " + std::to_string(payload.size()) +
                              " is below " + std::to_string(kExtJournalBytes));
  }
  JournalLocation l{LoadBe64(&payload[0]), LoadBe64(&payload[8])};
  const uint64_t cluster_mask = (uint64_t{1} << cluster_bits) - 1;
  if (l.offset_bytes == 0 || (l.offset_bytes & cluster_mask) != 0) {
    return Status::Corruption("journal header extension: journal_offset " +
                              HexOffset(l.offset_bytes) + " is zero or not cluster aligned");
  }
  if (l.size_bytes < (uint64_t{kMinJournalBlocks} << kMinBlockOrder) ||
      l.size_bytes > kMaxJournalBytes) {
    return Status::Corruption("journal header extension: journal_size " +
                              std::to_string(l.size_bytes) + " is out of range");
  }
  if (l.offset_bytes > file_size_bytes || l.size_bytes > file_size_bytes - l.offset_bytes) {
    return Status::Corruption("journal header extension: journal at " + HexOffset(l.offset_bytes) +
                              " (" + std::to_string(l.size_bytes) +
                              " bytes) lies past the end of the file");
  }
  return l;
}

void Checksum::Update(std::span<const uint8_t> bytes, size_t skip) {
  auto add = [&](std::span<const uint8_t> part) {
    if (part.empty()) return;
    if (byte_sum_) {
      for (uint8_t b : part) state_ += b;
    } else {
      state_ = static_cast<uint32_t>(crc32(state_, part.data(), static_cast<uInt>(part.size())));
    }
  };
  if (skip >= bytes.size()) {
    add(bytes);
    return;
  }
  add(bytes.first(skip));
  if (skip + 4 < bytes.size()) add(bytes.subspan(skip + 4));
}

uint32_t Checksum::Final() const { return byte_sum_ ? ~state_ : state_; }

std::vector<uint8_t> EncodeJournalHeader(const JournalHeader& h) {
  std::vector<uint8_t> out(h.block_bytes(), 0);
  StoreBe64(&out[0], kHeaderMagic);
  StoreBe32(&out[8], h.size_bytes);
  StoreBe32(&out[12], h.block_order);
  StoreBe32(&out[16], h.synced_index);
  StoreBe32(&out[20], h.synced_seq);
  StoreBe32(&out[24], h.committed_seq);
  StoreBe32(&out[32], h.variant);
  Checksum sum((h.variant & kVariantByteSum) != 0);
  sum.Update(out, kHeaderChecksumOffset);
  StoreBe32(&out[kHeaderChecksumOffset], sum.Final());
  return out;
}

Result<JournalHeader> DecodeJournalHeader(std::span<const uint8_t> block, uint64_t region_bytes) {
  if (block.size() < 512) return Bad(0, "header", "block shorter than 512 bytes");
  if (LoadBe64(&block[0]) != kHeaderMagic) return Bad(0, "header magic", "not \"qjournal\"");
  JournalHeader h;
  h.size_bytes = LoadBe32(&block[8]);
  h.block_order = LoadBe32(&block[12]);
  h.synced_index = LoadBe32(&block[16]);
  h.synced_seq = LoadBe32(&block[20]);
  h.committed_seq = LoadBe32(&block[24]);
  h.variant = LoadBe32(&block[32]);
  if (h.block_order < kMinBlockOrder || h.block_order > kMaxBlockOrder) {
    return Bad(12, "header block order", std::to_string(h.block_order) + " is outside 9..16");
  }
  if (h.size_bytes != region_bytes || h.size_bytes % h.block_bytes() != 0 ||
      h.blocks() < kMinJournalBlocks) {
    return Bad(8, "header size",
               std::to_string(h.size_bytes) + " does not match the extension's " +
                   std::to_string(region_bytes) + " or the block size");
  }
  if (block.size() < h.block_bytes()) return Bad(0, "header", "block shorter than the block size");
  if ((h.variant & ~kVariantKnown) != 0) return Bad(32, "header variant", "unknown flags");
  if (h.synced_index >= h.blocks()) {
    return Bad(16, "header synced_index", std::to_string(h.synced_index) + " is past the ring");
  }
  Checksum sum((h.variant & kVariantByteSum) != 0);
  sum.Update(block.first(h.block_bytes()), kHeaderChecksumOffset);
  if (sum.Final() != LoadBe32(&block[kHeaderChecksumOffset])) {
    return Bad(kHeaderChecksumOffset, "header checksum", "mismatch");
  }
  return h;
}

uint32_t DescriptorBytes(const Descriptor& d) {
  switch (d.type) {
    case DescriptorType::kWrite:
      return 4 + 16 * static_cast<uint32_t>(d.writes.size());
    case DescriptorType::kCopy:
      return 4 + 20 * static_cast<uint32_t>(d.copies.size());
    case DescriptorType::kRevoke:
      return 4 + 12 * static_cast<uint32_t>(d.revokes.size());
    case DescriptorType::kEscape:
      return 4 + 4 * static_cast<uint32_t>(d.escapes.size());
    default:
      return 4 + static_cast<uint32_t>(d.opaque.size());
  }
}

Result<std::vector<uint8_t>> EncodeDescriptorBlock(const DescriptorBlock& b, uint32_t block_bytes) {
  std::vector<uint8_t> out(block_bytes, 0);
  uint32_t at = kDescriptorStart;
  for (const Descriptor& d : b.descriptors) {
    const uint32_t size = DescriptorBytes(d);
    if (size > 0xFFFF || size > block_bytes - at) {
      return Status::InvalidArgument("journal descriptors do not fit in one block");
    }
    uint8_t* p = &out[at];
    StoreBe16(p, static_cast<uint16_t>(d.type));
    StoreBe16(p + 2, static_cast<uint16_t>(size));
    p += 4;
    for (const WriteChunk& w : d.writes) {
      StoreBe32(p, w.length_bytes), StoreBe64(p + 4, w.target_offset),
          StoreBe32(p + 12, w.data_block_index);
      p += 16;
    }
    for (const CopyChunk& c : d.copies) {
      StoreBe32(p, c.length_bytes), StoreBe64(p + 4, c.target_offset),
          StoreBe64(p + 12, c.source_offset);
      p += 20;
    }
    for (const RevokeRange& r : d.revokes) {
      StoreBe32(p, r.length_bytes), StoreBe64(p + 4, r.offset);
      p += 12;
    }
    for (uint32_t e : d.escapes) StoreBe32(p, e), p += 4;
    if (d.type != DescriptorType::kWrite && d.type != DescriptorType::kCopy &&
        d.type != DescriptorType::kRevoke && d.type != DescriptorType::kEscape) {
      std::copy(d.opaque.begin(), d.opaque.end(), p);
    }
    at += size;
  }
  StoreBe32(&out[0], kDescriptorMagic);
  StoreBe32(&out[8], b.seq);
  StoreBe32(&out[12], kDescriptorStart);
  StoreBe32(&out[16], at - kDescriptorStart);
  StoreBe32(&out[20], b.nb_data_blocks);
  StoreBe32(&out[24], b.flags);
  return out;
}

bool HasDescriptorMagic(std::span<const uint8_t> block) {
  return block.size() >= 4 && LoadBe32(block.data()) == kDescriptorMagic;
}

namespace {

// Parses one descriptor's records; `p` points past the common part.
Status DecodeRecords(Descriptor& d, const uint8_t* p, uint32_t payload, uint32_t record,
                     uint64_t at, uint32_t block_index, uint32_t nb_data, uint32_t block_bytes) {
  if (payload % record != 0) {
    return Bad(at, "descriptor size",
               std::to_string(payload + 4) + " is not 4 + " + std::to_string(record) + "n");
  }
  for (uint32_t i = 0; i < payload / record; ++i, p += record) {
    if (d.type == DescriptorType::kWrite) {
      WriteChunk w{LoadBe32(p), LoadBe64(p + 4), LoadBe32(p + 12)};
      const uint64_t first = block_index + 1, end = uint64_t{block_index} + 1 + nb_data;
      const uint64_t blocks = (uint64_t{w.length_bytes} + block_bytes - 1) / block_bytes;
      if (w.data_block_index < first || w.data_block_index + blocks > end) {
        return Bad(at + 4 + i * record, "write chunk", "data blocks outside the transaction");
      }
      if (w.target_offset > (uint64_t{1} << 56) || w.length_bytes == 0) {
        return Bad(at + 4 + i * record, "write chunk", "target or length out of range");
      }
      d.writes.push_back(w);
    } else if (d.type == DescriptorType::kCopy) {
      CopyChunk c{LoadBe32(p), LoadBe64(p + 4), LoadBe64(p + 12)};
      const bool overlap = c.target_offset < c.source_offset + c.length_bytes &&
                           c.source_offset < c.target_offset + c.length_bytes;
      if (overlap || c.target_offset > (uint64_t{1} << 56) ||
          c.source_offset > (uint64_t{1} << 56)) {
        return Bad(at + 4 + i * record, "copy chunk",
                   "source and target overlap or are out of range");
      }
      d.copies.push_back(c);
    } else if (d.type == DescriptorType::kRevoke) {
      RevokeRange r{LoadBe32(p), LoadBe64(p + 4)};
      if (r.offset > (uint64_t{1} << 56))
        return Bad(at + 4 + i * record, "revoke", "offset out of range");
      d.revokes.push_back(r);
    } else {
      const uint32_t e = LoadBe32(p);
      if (e < block_index + 1 || e > uint64_t{block_index} + nb_data) {
        return Bad(at + 4 + i * record, "escape", "block outside the transaction");
      }
      d.escapes.push_back(e);
    }
  }
  return Status::Ok();
}

}  // namespace

Result<DescriptorBlock> DecodeDescriptorBlock(std::span<const uint8_t> block, uint32_t block_index,
                                              uint64_t at) {
  if (block.size() < 512 || !HasDescriptorMagic(block))
    return Bad(at, "descriptor magic", "not \"qjbk\"");
  const uint32_t block_bytes = static_cast<uint32_t>(block.size());
  DescriptorBlock b;
  b.checksum = LoadBe32(&block[4]);
  b.seq = LoadBe32(&block[8]);
  const uint32_t start = LoadBe32(&block[12]);
  const uint32_t bytes = LoadBe32(&block[16]);
  b.nb_data_blocks = LoadBe32(&block[20]);
  b.flags = LoadBe32(&block[24]);
  if (start < kDescriptorStart || start > block_bytes || bytes > block_bytes - start) {
    return Bad(at + 12, "descriptor start/bytes",
               std::to_string(start) + "/" + std::to_string(bytes));
  }
  if (b.nb_data_blocks > kMaxJournalBytes / 512) return Bad(at + 20, "nb_data_blocks", "too large");
  for (uint32_t off = start; off < start + bytes;) {
    if (start + bytes - off < 4) return Bad(at + off, "descriptor", "truncated common part");
    Descriptor d;
    d.type = static_cast<DescriptorType>(LoadBe16(&block[off]));
    const uint32_t size = LoadBe16(&block[off + 2]);
    if (size < 4 || size > start + bytes - off) {
      return Bad(at + off, "descriptor size",
                 std::to_string(size) + " is below 4 or past the descriptors");
    }
    const uint8_t* p = &block[off + 4];
    const uint32_t payload = size - 4;
    switch (d.type) {
      case DescriptorType::kWrite:
        QCRASH_RETURN_IF_ERROR(
            DecodeRecords(d, p, payload, 16, at + off, block_index, b.nb_data_blocks, block_bytes));
        break;
      case DescriptorType::kCopy:
        QCRASH_RETURN_IF_ERROR(
            DecodeRecords(d, p, payload, 20, at + off, block_index, b.nb_data_blocks, block_bytes));
        break;
      case DescriptorType::kRevoke:
        QCRASH_RETURN_IF_ERROR(
            DecodeRecords(d, p, payload, 12, at + off, block_index, b.nb_data_blocks, block_bytes));
        break;
      case DescriptorType::kEscape:
        QCRASH_RETURN_IF_ERROR(
            DecodeRecords(d, p, payload, 4, at + off, block_index, b.nb_data_blocks, block_bytes));
        break;
      case DescriptorType::kNoop:
      case DescriptorType::kDedupInsert:
      case DescriptorType::kDedupDelete:
        d.opaque.assign(p, p + payload);
        break;
      default:
        return Bad(at + off, "descriptor type",
                   std::to_string(static_cast<uint16_t>(d.type)) + " is unknown");
    }
    b.descriptors.push_back(std::move(d));
    off += size;
  }
  return b;
}

}  // namespace qcrash::engine::journal
