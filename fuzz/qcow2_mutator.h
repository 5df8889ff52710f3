// The structure-aware qcow2 mutator: knows the header fields, the L1/L2 and
// refcount tables and the extension area of an image in a fuzz input, and
// rewrites one of them (values at the edges of their ranges, bit flips,
// offsets pointed at other structures) beside libFuzzer's byte mutations.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qcrash::fuzz {

// What a mutation rewrites: anything (header, L1/L2, refcounts,
// extensions), or mostly the snapshot table or the bitmap structures (the
// snapshot_fuzzer and bitmap_fuzzer targets).
enum class MutatorFocus : uint8_t { kImage, kSnapshots, kBitmaps };

// Mutates the qcow2 image at the front of data[0, size) in place and returns
// true, or returns false when data holds no image it understands. Never
// reads or writes outside data[0, size); never changes the size.
bool MutateQcow2(uint8_t* data, size_t size, uint32_t seed,
                 MutatorFocus focus = MutatorFocus::kImage);

}  // namespace qcrash::fuzz
