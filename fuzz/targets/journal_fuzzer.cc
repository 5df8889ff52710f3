// Fuzz target: the journal's on-disk codecs (engine/journal_format.h): the
// header extension payload, the journal header block and descriptor blocks.
// Property: what decodes re-encodes to bytes that decode to the same value.
// Replay itself is fuzzed by workload_crash_fuzzer (journal policy, crash
// states) and by the image targets on journal images.
#include <cstddef>
#include <cstdint>

#include "engine/journal_format.h"
#include "fuzz/fuzz_support.h"

namespace {

using namespace qcrash;
namespace j = engine::journal;

void Location(fuzz::ByteReader& reader) {
  const uint32_t cluster_bits = 9 + reader.U8() % 13;
  const uint64_t file_size = reader.U32();
  auto decoded = j::DecodeLocation(reader.Rest(), cluster_bits, file_size);
  if (!decoded.ok()) return;
  auto again = j::DecodeLocation(j::EncodeLocation(*decoded), cluster_bits, file_size);
  if (!again.ok() || !(*again == *decoded)) fuzz::Fail("journal location round trip", "differs");
}

void Header(fuzz::ByteReader& reader) {
  const uint64_t region_bytes = reader.U32();
  auto decoded = j::DecodeJournalHeader(reader.Rest(), region_bytes);
  if (!decoded.ok()) return;
  auto again = j::DecodeJournalHeader(j::EncodeJournalHeader(*decoded), region_bytes);
  if (!again.ok()) fuzz::Fail("an encoded journal header decodes", again.status().ToString());
  if (!(*again == *decoded)) fuzz::Fail("journal header round trip", "differs");
}

void Descriptor(fuzz::ByteReader& reader) {
  const uint32_t block_index = reader.U16();
  const auto block = reader.Rest();
  auto decoded = j::DecodeDescriptorBlock(block, block_index, 0);
  if (!decoded.ok()) return;
  auto encoded = j::EncodeDescriptorBlock(*decoded, static_cast<uint32_t>(block.size()));
  if (!encoded.ok())
    fuzz::Fail("a decoded descriptor block re-encodes", encoded.status().ToString());
  auto again = j::DecodeDescriptorBlock(*encoded, block_index, 0);
  if (!again.ok()) fuzz::Fail("an encoded descriptor block decodes", again.status().ToString());
  j::DescriptorBlock expected = *decoded;
  expected.checksum = again->checksum;  // the encoder leaves the checksum to its caller
  if (!(*again == expected)) fuzz::Fail("descriptor block round trip", "differs");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::ByteReader reader(data, size);
  switch (reader.U8() % 3) {
    case 0:
      Location(reader);
      break;
    case 1:
      Header(reader);
      break;
    default:
      Descriptor(reader);
      break;
  }
  return 0;
}
