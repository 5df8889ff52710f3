// Fuzz target: open an image read-write, run a short write / write-zeroes /
// discard / flush sequence decoded from the input's trailer (the allocation,
// COW, free and refcount paths), close, then check. Properties, when the
// image was clean before: every operation succeeds, guest data reads back
// as written, and the closed image checks clean.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "engine/check.h"
#include "engine/endian.h"
#include "engine/image.h"
#include "engine/qcow2_format.h"
#include "fuzz/fuzz_support.h"

namespace {

using namespace qcrash;

// A guest sector's expected bytes; nullopt = not known (discarded partly).
using SectorModel = std::map<uint64_t, std::optional<std::vector<uint8_t>>>;

struct Op {
  uint8_t kind;  // 0 write, 1 zero (keep), 2 zero (unmap), 3 discard, 4 flush
  uint64_t offset;
  uint64_t length;
  uint8_t pattern;
};

Op DecodeOp(fuzz::ByteReader& reader, uint64_t size_bytes, uint64_t cluster_bytes) {
  Op op;
  op.kind = reader.U8() % 5;
  const uint32_t where = reader.U32();
  // Mostly cluster- and sector-aligned offsets, sometimes any byte.
  const uint64_t unit = (where & 3) == 0 ? 1 : (where & 3) == 1 ? 512 : cluster_bytes;
  op.offset = size_bytes == 0 ? 0 : ((where >> 2) * unit) % size_bytes;
  op.length = std::min<uint64_t>(1 + reader.U16() % (3 * cluster_bytes), size_bytes - op.offset);
  op.pattern = reader.U8();
  return op;
}

// Loads the sectors [offset, offset+length) touches into the model (their
// content before the op), so the model starts from what the image held.
void Touch(engine::Image& image, SectorModel& model, uint64_t offset, uint64_t length) {
  for (uint64_t s = offset / 512; s * 512 < offset + length; ++s) {
    if (model.count(s)) continue;
    std::vector<uint8_t> bytes(std::min<uint64_t>(512, image.size_bytes() - s * 512));
    model[s] = image.Read(s * 512, bytes).ok() ? std::optional(bytes) : std::nullopt;
  }
}

// A discard zeroes whole clusters (and the tail cluster); with extended L2
// it zeroes whole subclusters too, except in a compressed or shared cluster,
// which it leaves alone: those sectors become unknown.
void Apply(SectorModel& model, const Op& op, uint64_t cluster_bytes, uint64_t subcluster_bytes,
           uint64_t size_bytes) {
  uint64_t begin = op.offset;
  uint64_t end = op.offset + op.length;
  if (op.kind == 3) {
    const uint64_t unit = subcluster_bytes;
    begin = (op.offset + unit - 1) / unit * unit;
    end = end == size_bytes ? end : end / unit * unit;
    for (uint64_t at = begin; at < end; ++at) {
      const uint64_t cluster = at / cluster_bytes * cluster_bytes;
      const bool whole = cluster >= begin && (cluster + cluster_bytes <= end || end == size_bytes);
      auto& sector = model[at / 512];
      if (!sector) continue;
      if (whole) {
        (*sector)[at % 512] = 0;
      } else {
        sector.reset();
      }
    }
    return;
  }
  for (uint64_t at = begin; at < end; ++at) {
    auto& sector = model[at / 512];
    if (sector) (*sector)[at % 512] = op.kind == 0 ? op.pattern : 0;
  }
}

// The refcount the input image gave cluster `index`, read from its own
// refcount table (0 when it has no block for it).
uint64_t InputRefcount(std::span<const uint8_t> image, const engine::Header& h, uint64_t index) {
  namespace f = engine::format;
  const uint64_t per_block = f::RefcountBlockEntries(h.cluster_bits, h.refcount_order);
  const uint64_t entry_at = h.refcount_table_offset + index / per_block * 8;
  if (entry_at + 8 > image.size()) return 0;
  const uint64_t block = LoadBe64(&image[entry_at]) & f::kRefcountTableOffsetMask;
  if (block == 0 || block + h.cluster_bytes() > image.size()) return 0;
  return f::GetRefcount(image.subspan(block, h.cluster_bytes()), index % per_block,
                        h.refcount_order);
}

// Leaks after operations on a clean image are an allocator bug, except for
// clusters past the input's end that already had a refcount: check cannot
// see those until the file grows over them (qemu-img check neither).
bool OnlyHiddenLeaks(const engine::CheckReport& report, std::span<const uint8_t> image,
                     const engine::Header& h) {
  if (report.findings_omitted != 0) return false;
  const uint64_t input_clusters = (image.size() + h.cluster_bytes() - 1) / h.cluster_bytes();
  for (const engine::Finding& finding : report.findings) {
    if (finding.severity != engine::Severity::kLeak) continue;
    if (finding.cluster_index < input_clusters ||
        InputRefcount(image, h, finding.cluster_index) == 0) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::ImageAndTrailer input = fuzz::SplitTrailer(data, size);
  auto device = fuzz::MakeDevice(input.image);
  auto before = engine::CheckImage(*device, {engine::RepairMode::kNone});
  const bool was_clean = before.ok() && fuzz::IsClean(*before);
  auto opened = engine::Image::Open(*device, fuzz::SmallOpenOptions(false));
  if (!opened.ok()) return 0;
  engine::Image& image = **opened;
  const uint64_t size_bytes = image.size_bytes();
  const uint64_t cluster_bytes = image.header().cluster_bytes();
  // A clean image without a backing file (whose reads need an opener) and
  // open read-write is one every operation must succeed on.
  const bool trusted = was_clean && image.header().backing_file.empty() && !image.read_only();
  const bool model_data = trusted;
  fuzz::ByteReader reader(input.trailer);
  SectorModel model;
  bool all_ok = true;
  while (reader.remaining() >= fuzz::kTrailerRecordBytes) {
    const Op op = DecodeOp(reader, size_bytes, cluster_bytes);
    if (op.length == 0) continue;
    if (model_data) Touch(image, model, op.offset, op.length);
    Status status;
    switch (op.kind) {
      case 0:
        status = image.Write(op.offset, std::vector<uint8_t>(op.length, op.pattern));
        break;
      case 1:
        status = image.WriteZeroes(op.offset, op.length, false);
        break;
      case 2:
        status = image.WriteZeroes(op.offset, op.length, true);
        break;
      case 3:
        status = image.Discard(op.offset, op.length);
        break;
      default:
        status = image.Flush();
        break;
    }
    if (!status.ok()) {
      // NoSpace: the 64 MiB device bound, not an engine fault.
      // The engine may still meet corruption that check (like qemu-img check)
      // does not look for, such as compressed data that does not inflate;
      // it then marks the image corrupt and read-only, which is right.
      const bool found_corrupt_data = status.code() == StatusCode::kReadOnly && image.read_only();
      if (trusted && status.code() != StatusCode::kNoSpace && !found_corrupt_data) {
        fuzz::Fail("operations on a clean image succeed", status.ToString());
      }
      all_ok = false;
      break;
    }
    if (model_data) {
      Apply(model, op, cluster_bytes, image.header().subcluster_bytes(), size_bytes);
    }
  }
  if (!image.Close().ok()) all_ok = false;
  for (const auto& [sector, expected] : model) {
    if (!all_ok || !expected) continue;
    std::vector<uint8_t> got(expected->size());
    const Status read = image.Read(sector * 512, got);
    if (!read.ok() || got != *expected) {
      fuzz::Fail("guest data reads back as written",
                 "guest sector " + std::to_string(sector) +
                     (read.ok() ? " differs" : ": " + read.ToString()));
    }
  }
  const engine::Header header = image.header();
  opened->reset();
  auto after = engine::CheckImage(*device, {engine::RepairMode::kNone});
  // A read-write open clears the bitmaps autoclear bit (the engine does not
  // keep bitmaps), which turns the bitmap clusters into leaks, as QEMU's
  // check says of "a program lacking bitmap support".
  const bool leaks_expected = header.bitmaps.has_value();
  const bool clean =
      after.ok() && after->corruptions == 0 && after->check_errors == 0 &&
      (after->leaks == 0 || leaks_expected || OnlyHiddenLeaks(*after, input.image, header));
  if (trusted && all_ok && !clean) {
    fuzz::Fail("a clean image stays clean after operations and close",
               after.ok() ? fuzz::DescribeReport(*after) : after.status().ToString());
  }
  return 0;
}
