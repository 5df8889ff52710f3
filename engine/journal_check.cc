// Check's view of the journal: its area is metadata like the L1 table (no
// guest data pointer may lead into it) and one more owner of clusters (all
// with refcount 1), as long as the journal-valid bit says the area is ours.
// Without the bit an old tool wrote the image and the area is not counted:
// a repair may then reclaim it, and the engine never uses it again.
#include <optional>

#include "engine/check_internal.h"
#include "engine/journal_format.h"
#include "engine/qcow2_format.h"
#include "engine/repair_plan.h"

namespace qcrash::engine::check_internal {
namespace {

namespace f = format;
namespace j = ::qcrash::engine::journal;

// The journal area the header names while the journal-valid bit is set;
// nullopt without the bit or the extension, or when the extension does not
// decode (then nothing owns the area). The area may run past the end of the
// file: AddReference reports that, and a rebuild grows the file over it.
std::optional<j::JournalLocation> ValidJournal(const CheckContext& ctx) {
  const Header& h = ctx.header;
  if ((h.autoclear_features & f::kAutoclearJournalValid) == 0) return std::nullopt;
  for (const HeaderExtension& e : h.unknown_extensions) {
    if (e.type != j::kExtJournal) continue;
    auto location = j::DecodeLocation(e.data, h.cluster_bits, ~uint64_t{0});
    if (!location.ok()) return std::nullopt;
    return *location;
  }
  return std::nullopt;
}

// The first metadata use marked so far inside the journal area (the header,
// the L1 tables, the refcount table and the snapshot table), or kNone.
ClusterUse MetadataUnderJournal(const CheckContext& ctx, const j::JournalLocation& location) {
  const uint32_t bits = ctx.header.cluster_bits;
  const uint64_t first = location.offset_bytes >> bits;
  const uint64_t last = (location.offset_bytes + location.size_bytes - 1) >> bits;
  // Clusters past the end of the file hold no marks; the journal is at most
  // 1 GiB, so this loop is bounded by the file's clusters.
  for (uint64_t k = first; k <= last && k < ctx.nb_clusters; ++k) {
    if (ctx.UseOf(k) != ClusterUse::kNone) return ctx.UseOf(k);
  }
  return ClusterUse::kNone;
}

}  // namespace

void MarkJournal(CheckContext& ctx) {
  const std::optional<j::JournalLocation> location = ValidJournal(ctx);
  if (!location) return;
  const ClusterUse other = MetadataUnderJournal(ctx, *location);
  if (other != ClusterUse::kNone) {
    const std::string what = std::string("the journal overlaps the ") + ClusterUseName(other);
    if (DecideDiscard(ctx, {DiscardProposal::Structure::kJournal, FindingKind::kOverlap,
                            location->offset_bytes, "journal", what, Severity::kInfo, what})) {
      return;
    }
  }
  ctx.MarkMetadata(location->offset_bytes, location->size_bytes, ClusterUse::kJournal);
}

void CountJournal(CheckContext& ctx) {
  const std::optional<j::JournalLocation> location = ValidJournal(ctx);
  if (location) ctx.AddReference(location->offset_bytes, location->size_bytes, "journal");
}

}  // namespace qcrash::engine::check_internal
