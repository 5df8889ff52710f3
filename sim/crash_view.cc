// CrashView: building a crash state's overlay, and reads and writes over it.
#include "sim/crash_view.h"

#include <algorithm>
#include <cstring>

namespace qcrash::sim {
namespace {

std::string Where(const CrashPoint& point, const SectorChoice& choice) {
  return "crash state p" + std::to_string(point.point) + ": sector " +
         std::to_string(choice.sector);
}

// The error paths alone build messages: this runs per deviation, per view.
Status CheckChoice(const CrashPoint& point, const SectorChoice& choice, int64_t index) {
  if (index < 0)
    return Status::InvalidArgument(Where(point, choice) + " is not pending at this point");
  const uint32_t count = point.pending[static_cast<size_t>(index)].count;
  switch (choice.kind) {
    case ChoiceKind::kVersion:
      if (choice.version > count) {
        return Status::InvalidArgument(Where(point, choice) + ": version " +
                                       std::to_string(choice.version) + " of " +
                                       std::to_string(count));
      }
      return Status::Ok();
    case ChoiceKind::kMix:
      if (!point.non_atomic.enabled) {
        return Status::InvalidArgument(Where(point, choice) +
                                       ": a mixed sector needs the non-atomic mode");
      }
      if (choice.version > count || choice.second_version > count ||
          choice.version == choice.second_version || choice.cut_bytes == 0 ||
          choice.cut_bytes >= point.sector_bytes) {
        return Status::InvalidArgument(Where(point, choice) + ": bad mix of versions or cut");
      }
      return Status::Ok();
    case ChoiceKind::kGarbage:
      if (!point.non_atomic.enabled || !point.non_atomic.garbage) {
        return Status::InvalidArgument(Where(point, choice) +
                                       ": garbage needs the non-atomic mode");
      }
      return Status::Ok();
  }
  return Status::InvalidArgument(Where(point, choice) + ": unknown choice");
}

}  // namespace

Result<std::unique_ptr<CrashView>> CrashTimeline::BuildView(std::shared_ptr<const CrashPoint> point,
                                                            const CrashState& state) {
  return CrashView::Build(std::move(point), state);
}

// The second device's view (M11): the point and state restricted to its
// sectors, renumbered from 0, over its own base and size. O(pending).
Result<std::unique_ptr<CrashView>> CrashTimeline::SecondDeviceView(
    const std::shared_ptr<const CrashPoint>& point, const CrashState& state) {
  if (!point->second_base) {
    return Status::InvalidArgument("crash state p" + std::to_string(point->point) +
                                   ": the log has no second device");
  }
  const uint64_t first_sector = kSecondDeviceBaseBytes / point->sector_bytes;
  auto second = std::make_shared<CrashPoint>();
  second->point = point->point;
  second->size_bytes = point->second_size_bytes;
  second->sector_bytes = point->sector_bytes;
  second->non_atomic = point->non_atomic;
  second->base = point->second_base;
  second->arena = point->arena;
  second->version_data = point->version_data;
  second->version_record = point->version_record;
  for (const OverlayEntry& entry : point->latest_overlay) {
    if (entry.sector >= first_sector) {
      second->latest_overlay.push_back({entry.sector - first_sector, entry.data});
    }
  }
  const size_t skipped_overlay = point->latest_overlay.size() - second->latest_overlay.size();
  for (PendingSector pending : point->pending) {
    if (pending.sector < first_sector) continue;
    pending.sector -= first_sector;
    pending.overlay_index -= static_cast<uint32_t>(skipped_overlay);
    second->pending.push_back(pending);
  }
  CrashState second_state{state.point, {}};
  for (SectorChoice choice : state.deviations) {
    if (choice.sector < first_sector) continue;
    choice.sector -= first_sector;
    second_state.deviations.push_back(choice);
  }
  return CrashView::Build(std::move(second), second_state);
}

CrashView::CrashView(std::shared_ptr<const CrashPoint> point)
    : point_(std::move(point)),
      overlay_(point_->latest_overlay),
      size_bytes_(point_->size_bytes),
      truncated_at_bytes_(point_->size_bytes),
      sector_bytes_(point_->sector_bytes),
      nested_log_(point_->sector_bytes, point_->size_bytes) {}

Result<std::unique_ptr<CrashView>> CrashView::Build(std::shared_ptr<const CrashPoint> point,
                                                    const CrashState& state) {
  if (state.point != point->point) {
    return Status::InvalidArgument("crash state p" + std::to_string(state.point) +
                                   " built on point " + std::to_string(point->point));
  }
  std::unique_ptr<CrashView> view(new CrashView(std::move(point)));
  const CrashPoint& cp = *view->point_;
  // Mixed and garbage sectors need the non-atomic mode (CheckChoice refuses
  // them otherwise), so atomic points skip the count.
  size_t owned_sectors = 0;
  if (cp.non_atomic.enabled) {
    for (const SectorChoice& choice : state.deviations) {
      if (choice.kind != ChoiceKind::kVersion) ++owned_sectors;
    }
  }
  // Reserved once, so the overlay's pointers into owned_ stay valid.
  view->owned_.resize(owned_sectors * cp.sector_bytes);
  uint8_t* owned = view->owned_.data();
  // Raw pointers, and one merge walk (deviations and pending are both
  // sorted): at 512-byte sectors a state has hundreds of deviations.
  const PendingSector* const pending_begin = cp.pending.data();
  const PendingSector* const pending_end = pending_begin + cp.pending.size();
  const PendingSector* next_pending = pending_begin;
  const uint8_t* const* const version_data = cp.version_data.data();
  OverlayEntry* const overlay = view->overlay_.data();
  uint64_t previous_sector = 0;
  for (size_t i = 0; i < state.deviations.size(); ++i) {
    const SectorChoice& choice = state.deviations[i];
    if (i > 0 && choice.sector <= previous_sector) {
      return Status::InvalidArgument("crash state p" + std::to_string(cp.point) +
                                     ": sectors not in increasing order");
    }
    previous_sector = choice.sector;
    // The gap to the next deviation is random and short: counting, without
    // branches, how many of the next four pending sectors lie before it
    // replaces a mispredicted loop exit per deviation.
    while (pending_end - next_pending >= 4) {
      const uint64_t target = choice.sector;
      if (next_pending[3].sector < target) {
        next_pending += 4;
        continue;
      }
      next_pending += static_cast<size_t>(next_pending[0].sector < target) +
                      static_cast<size_t>(next_pending[1].sector < target) +
                      static_cast<size_t>(next_pending[2].sector < target);
      break;
    }
    while (next_pending != pending_end && next_pending->sector < choice.sector) ++next_pending;
    const bool found = next_pending != pending_end && next_pending->sector == choice.sector;
    // The common case, an atomic version in range, checks inline; anything
    // else goes through CheckChoice, which builds the error message.
    if (found && choice.kind == ChoiceKind::kVersion && choice.version <= next_pending->count) {
      // Only version 0 can be null (the base's): then read it in place.
      const uint8_t* data = version_data[next_pending->first + choice.version];
      const uint8_t* base_data = next_pending->base_data;  // loaded either way: a select
      overlay[next_pending->overlay_index].data = data != nullptr ? data : base_data;
      continue;
    }
    QCRASH_RETURN_IF_ERROR(
        CheckChoice(cp, choice, found ? static_cast<int64_t>(next_pending - pending_begin) : -1));
    const PendingSector& pending = *next_pending;
    const uint8_t** slot = &overlay[pending.overlay_index].data;
    if (choice.kind == ChoiceKind::kGarbage) {
      FillGarbage(cp.point, choice.sector, owned, cp.sector_bytes);
    } else {
      // A mix: bytes [0, cut) of one version, [cut, S) of the other (M8).
      const uint64_t offset = choice.sector * cp.sector_bytes;
      for (const auto& [version, from, length] :
           {std::tuple{choice.version, 0u, choice.cut_bytes},
            std::tuple{choice.second_version, choice.cut_bytes,
                       cp.sector_bytes - choice.cut_bytes}}) {
        const uint8_t* data = cp.version_data[pending.first + version];
        if (data != nullptr) {
          std::memcpy(owned + from, data + from, length);
        } else {
          cp.base->Read(offset + from, std::span<uint8_t>(owned + from, length));
        }
      }
    }
    *slot = owned;
    owned += cp.sector_bytes;
  }
  return view;
}

void CrashView::ReadUnwritten(uint64_t offset_bytes, std::span<uint8_t> out) const {
  const uint64_t end = offset_bytes + out.size();
  const ChunkedImage& base = *point_->base;
  const uint64_t sector_bytes = sector_bytes_;
  const OverlayEntry* const first = overlay_.data();
  const OverlayEntry* const last = first + overlay_.size();
  // Readers mostly go forward: where the previous read stopped is usually
  // where this one starts, which spares a mispredicted binary search per read.
  const uint64_t start_sector = offset_bytes / sector_bytes;
  const OverlayEntry* it = first + std::min(read_hint_, overlay_.size());
  if (!((it == last || it->sector >= start_sector) &&
        (it == first || (it - 1)->sector < start_sector))) {
    it = std::lower_bound(first, last, start_sector,
                          [](const OverlayEntry& e, uint64_t s) { return e.sector < s; });
  }
  uint64_t position = offset_bytes;
  while (position < end) {
    const uint64_t entry_start = it == last ? end : std::max(it->sector * sector_bytes, position);
    if (entry_start > position) {
      const uint64_t gap_end = std::min(end, entry_start);
      base.Read(position, out.subspan(position - offset_bytes, gap_end - position));
      position = gap_end;
      continue;
    }
    // A run of adjacent sectors whose bytes are adjacent too (the sectors of
    // one write in the arena, of one base chunk, of owned_) is one copy: at
    // 512-byte sectors the per-sector calls, not the bytes, dominate a read.
    // Addresses are compared as integers: the run's bytes are exactly the
    // entries' bytes, whichever allocations they belong to.
    const uint64_t run_start = it->sector * sector_bytes;
    const uint8_t* data = it->data;
    const uintptr_t address = reinterpret_cast<uintptr_t>(data);
    uint64_t run_end = run_start + sector_bytes;
    uint64_t next_sector = it->sector + 1;
    for (++it; run_end < end && it != last && it->sector == next_sector; ++it, ++next_sector) {
      const bool adjacent = data == nullptr ? it->data == nullptr
                                            : reinterpret_cast<uintptr_t>(it->data) ==
                                                  address + (run_end - run_start);
      if (!adjacent) break;
      run_end += sector_bytes;
    }
    const uint64_t stop = std::min(end, run_end);
    uint8_t* target = out.data() + (position - offset_bytes);
    if (data != nullptr) {
      std::memcpy(target, data + (position - run_start), stop - position);
    } else {
      base.Read(position, std::span<uint8_t>(target, stop - position));
    }
    position = stop;
  }
  read_hint_ = static_cast<size_t>(it - first);
  if (truncated_at_bytes_ < end) {
    const uint64_t zero_from = std::max(truncated_at_bytes_, offset_bytes);
    std::memset(out.data() + (zero_from - offset_bytes), 0, end - zero_from);
  }
}

void CrashView::ReadAll(uint64_t offset_bytes, std::span<uint8_t> out) const {
  ReadUnwritten(offset_bytes, out);
  if (written_.empty() || out.empty()) return;
  const uint64_t end = offset_bytes + out.size();
  for (auto it = FirstWrittenFrom(offset_bytes / sector_bytes_);
       it != written_.end() && it->sector * sector_bytes_ < end; ++it) {
    const uint64_t sector_start = it->sector * sector_bytes_;
    const uint64_t from = std::max(sector_start, offset_bytes);
    const uint64_t to = std::min(sector_start + sector_bytes_, end);
    std::memcpy(out.data() + (from - offset_bytes), WrittenBytes(*it) + (from - sector_start),
                to - from);
  }
}

std::vector<CrashView::WrittenSector>::const_iterator CrashView::FirstWrittenFrom(
    uint64_t sector) const {
  return std::lower_bound(written_.begin(), written_.end(), sector,
                          [](const WrittenSector& e, uint64_t s) { return e.sector < s; });
}

Status CrashView::Read(uint64_t offset_bytes, std::span<uint8_t> out) {
  if (offset_bytes > size_bytes_ || out.size() > size_bytes_ - offset_bytes) {
    return Status::IoError("crash view p" + std::to_string(point_->point) + ": read of " +
                           std::to_string(out.size()) + " bytes at " + HexOffset(offset_bytes) +
                           " past the end (" + std::to_string(size_bytes_) + " bytes)");
  }
  ReadAll(offset_bytes, out);
  return Status::Ok();
}

Status CrashView::WriteImpl(uint64_t offset_bytes, std::span<const uint8_t> data, bool fua) {
  if (offset_bytes > (uint64_t{1} << 62) || data.size() > kLogMaxWriteBytes) {
    return Status::NoSpace("crash view: write at " + HexOffset(offset_bytes) + " past the limit");
  }
  if (logging_) nested_log_.AppendWrite(offset_bytes, data, fua);
  if (data.empty()) return Status::Ok();
  const uint64_t end = offset_bytes + data.size();
  size_bytes_ = std::max(size_bytes_, end);
  for (uint64_t sector = offset_bytes / sector_bytes_; sector * sector_bytes_ < end; ++sector) {
    const uint64_t sector_start = sector * sector_bytes_;
    // Recovery mostly writes forward: appending past the last written
    // sector skips the search and the insertion's move.
    size_t index = written_.size();
    if (!written_.empty() && written_.back().sector >= sector) {
      index = static_cast<size_t>(FirstWrittenFrom(sector) - written_.cbegin());
    }
    const uint64_t from = std::max(sector_start, offset_bytes);
    const uint64_t to = std::min(sector_start + sector_bytes_, end);
    if (index == written_.size() || written_[index].sector != sector) {
      const uint64_t slot = written_bytes_.size() / sector_bytes_;
      written_bytes_.resize(written_bytes_.size() + sector_bytes_);
      written_.insert(written_.begin() + static_cast<ptrdiff_t>(index), {sector, slot});
      // Copy-on-write of the sector, unless this write covers all of it.
      if (to - from != sector_bytes_) {
        ReadUnwritten(sector_start,
                      std::span<uint8_t>(WrittenBytes(written_[index]), sector_bytes_));
      }
    }
    std::memcpy(WrittenBytes(written_[index]) + (from - sector_start),
                data.data() + (from - offset_bytes), to - from);
  }
  return Status::Ok();
}

Status CrashView::Write(uint64_t offset_bytes, std::span<const uint8_t> data) {
  return WriteImpl(offset_bytes, data, false);
}

Status CrashView::WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) {
  return WriteImpl(offset_bytes, data, true);
}

Status CrashView::Flush() {
  if (logging_) nested_log_.AppendFlush();
  return Status::Ok();
}

Status CrashView::Resize(uint64_t size_bytes, ResizeMode /*mode*/) {
  if (size_bytes > (uint64_t{1} << 62)) return Status::NoSpace("crash view: resize past the limit");
  if (logging_) nested_log_.AppendResize(size_bytes);
  if (size_bytes < size_bytes_) {
    truncated_at_bytes_ = std::min(truncated_at_bytes_, size_bytes);
    const uint64_t first_gone = (size_bytes + sector_bytes_ - 1) / sector_bytes_;
    written_.erase(FirstWrittenFrom(first_gone), written_.cend());
    const uint64_t within = size_bytes % sector_bytes_;
    if (within != 0 && !written_.empty() && written_.back().sector == size_bytes / sector_bytes_) {
      std::memset(WrittenBytes(written_.back()) + within, 0, sector_bytes_ - within);
    }
  }
  size_bytes_ = size_bytes;
  return Status::Ok();
}

DeviceGeometry CrashView::Geometry() const { return {sector_bytes_, !point_->non_atomic.enabled}; }

ChunkedImage CrashView::Materialize() const {
  ChunkedImage image = *point_->base;
  image.Resize(std::max(image.SizeBytes(), point_->size_bytes));
  for (const OverlayEntry& entry : overlay_) {
    if (entry.data == nullptr) continue;
    const uint64_t start = entry.sector * sector_bytes_;
    if (start >= point_->size_bytes) continue;
    // A durable version read in place from the base: writing it would only
    // unshare its chunk.
    if (entry.data == point_->base->ContiguousAt(start, sector_bytes_)) continue;
    const uint64_t length = std::min<uint64_t>(sector_bytes_, point_->size_bytes - start);
    image.Write(start, std::span<const uint8_t>(entry.data, length));
  }
  image.Resize(std::min(point_->size_bytes, truncated_at_bytes_));
  image.Resize(size_bytes_);
  for (const WrittenSector& entry : written_) {
    const uint64_t start = entry.sector * sector_bytes_;
    if (start >= size_bytes_) continue;
    const uint64_t length = std::min<uint64_t>(sector_bytes_, size_bytes_ - start);
    image.Write(start, std::span<const uint8_t>(WrittenBytes(entry), length));
  }
  return image;
}

void CrashView::StartLog() {
  nested_initial_ = std::make_shared<const ChunkedImage>(Materialize());
  nested_log_ = WriteLog(sector_bytes_, size_bytes_);
  logging_ = true;
}

Result<CrashTimeline> CrashView::NestedTimeline(NonAtomicOptions non_atomic) const {
  if (!logging_) return Status::InvalidArgument("crash view: NestedTimeline before StartLog");
  return CrashTimeline(nested_initial_, std::make_shared<const WriteLog>(nested_log_),
                       std::move(non_atomic));
}

}  // namespace qcrash::sim
