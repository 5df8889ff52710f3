// Check's view of the journal: its area is one more owner of clusters (all
// with refcount 1), as long as the journal-valid bit says the area is ours.
// Without the bit an old tool wrote the image and the area is not counted:
// a repair may then reclaim it, and the engine never uses it again.
#include "engine/check_internal.h"
#include "engine/journal_format.h"
#include "engine/qcow2_format.h"

namespace qcrash::engine::check_internal {

void CountJournal(CheckContext& ctx) {
  const Header& h = ctx.header;
  if ((h.autoclear_features & format::kAutoclearJournalValid) == 0) return;
  for (const HeaderExtension& e : h.unknown_extensions) {
    if (e.type != ::qcrash::engine::journal::kExtJournal) continue;
    auto location = ::qcrash::engine::journal::DecodeLocation(e.data, h.cluster_bits, ~uint64_t{0});
    if (location.ok()) ctx.AddReference(location->offset_bytes, location->size_bytes, "journal");
    return;
  }
}

}  // namespace qcrash::engine::check_internal
