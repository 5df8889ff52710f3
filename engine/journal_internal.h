// Shared between journal.cc (commit, checkpoint) and journal_replay.cc.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/journal.h"
#include "engine/journal_format.h"

namespace qcrash::engine {

// One on-disk transaction: its descriptor block and its data blocks.
struct Journal::Txn {
  uint32_t index = 0;  // journal block index of the descriptor
  journal::DescriptorBlock block;
  std::vector<uint8_t> data;  // nb_data_blocks blocks (escapes restored when read)
  uint32_t blocks() const { return 1 + block.nb_data_blocks; }
};

// The variant flags a journal is formatted with.
uint32_t VariantFlags(const JournalOptions& options);

// seq a comes after b (sequence numbers wrap at 2^32).
inline bool SeqAfter(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) > 0; }

}  // namespace qcrash::engine
