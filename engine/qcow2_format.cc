// Refcount packing for every refcount_order from 0 (1 bit) to 6 (64 bits).
#include "engine/qcow2_format.h"

#include <cassert>

#include "engine/endian.h"

namespace qcrash::engine::format {

uint64_t GetRefcount(std::span<const uint8_t> refcount_block, uint64_t index,
                     uint32_t refcount_order) {
  const uint32_t bits = 1u << refcount_order;
  switch (bits) {
    case 64:
      return LoadBe64(&refcount_block[index * 8]);
    case 32:
      return LoadBe32(&refcount_block[index * 4]);
    case 16:
      return LoadBe16(&refcount_block[index * 2]);
    case 8:
      return refcount_block[index];
    default: {
      const uint64_t bit = index * bits;
      return (refcount_block[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
  }
}

void SetRefcount(std::span<uint8_t> refcount_block, uint64_t index, uint32_t refcount_order,
                 uint64_t value) {
  const uint32_t bits = 1u << refcount_order;
  assert(value <= MaxRefcount(refcount_order));
  switch (bits) {
    case 64:
      StoreBe64(&refcount_block[index * 8], value);
      return;
    case 32:
      StoreBe32(&refcount_block[index * 4], static_cast<uint32_t>(value));
      return;
    case 16:
      StoreBe16(&refcount_block[index * 2], static_cast<uint16_t>(value));
      return;
    case 8:
      refcount_block[index] = static_cast<uint8_t>(value);
      return;
    default: {
      const uint64_t bit = index * bits;
      const uint8_t mask = static_cast<uint8_t>(((1u << bits) - 1) << (bit % 8));
      uint8_t& byte = refcount_block[bit / 8];
      byte = static_cast<uint8_t>((byte & ~mask) | ((value << (bit % 8)) & mask));
    }
  }
}

}  // namespace qcrash::engine::format
