// CrashTimeline: replays a write log once into flush epochs (shared durable
// bases plus sector versions) and answers crash points from them.
#include <algorithm>
#include <cassert>
#include <cstring>

#include "sim/crash_model.h"
#include "sim/crash_view.h"

namespace qcrash::sim {
namespace {

constexpr uint64_t kDurableRecord = ~uint64_t{0};

uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::vector<uint32_t> CutsOf(const NonAtomicOptions& options, uint32_t sector_bytes) {
  if (!options.cuts_bytes.empty()) return options.cuts_bytes;
  return {sector_bytes / 2};
}

}  // namespace

void FillGarbage(uint64_t point, uint64_t sector, uint8_t* out, uint32_t sector_bytes) {
  uint64_t state = point * 0x100000001b3ULL ^ (sector + 0x5bd1e995ULL);
  for (uint32_t i = 0; i < sector_bytes; i += 8) {
    const uint64_t word = SplitMix(&state);
    std::memcpy(out + i, &word, std::min<uint32_t>(8, sector_bytes - i));
  }
}

uint64_t CrashPoint::ChoiceCount(size_t pending_index) const {
  const uint64_t versions = pending[pending_index].count + uint64_t{1};
  if (!non_atomic.enabled) return versions;
  const uint64_t cuts = non_atomic.cuts_bytes.empty() ? 1 : non_atomic.cuts_bytes.size();
  return versions + versions * (versions - 1) * cuts + (non_atomic.garbage ? 1 : 0);
}

SectorChoice CrashPoint::ChoiceAt(size_t pending_index, uint64_t choice_index) const {
  const PendingSector& p = pending[pending_index];
  SectorChoice choice;
  choice.sector = p.sector;
  const uint64_t versions = p.count + uint64_t{1};
  if (choice_index < versions) {
    choice.version = static_cast<uint32_t>(choice_index);
    return choice;
  }
  const std::vector<uint32_t> cuts = CutsOf(non_atomic, sector_bytes);
  const uint64_t mix = choice_index - versions;
  if (mix < versions * (versions - 1) * cuts.size()) {
    const uint64_t pair = mix / cuts.size();
    const uint64_t a = pair / (versions - 1);
    const uint64_t b = pair % (versions - 1);
    choice.kind = ChoiceKind::kMix;
    choice.version = static_cast<uint32_t>(a);
    choice.second_version = static_cast<uint32_t>(b < a ? b : b + 1);
    choice.cut_bytes = cuts[mix % cuts.size()];
    return choice;
  }
  choice.kind = ChoiceKind::kGarbage;
  return choice;
}

int64_t CrashPoint::FindPending(uint64_t sector) const {
  auto it = std::lower_bound(pending.begin(), pending.end(), sector,
                             [](const PendingSector& p, uint64_t s) { return p.sector < s; });
  if (it == pending.end() || it->sector != sector) return -1;
  return it - pending.begin();
}

CrashTimeline::CrashTimeline(std::shared_ptr<const ChunkedImage> initial,
                             std::shared_ptr<const WriteLog> log, NonAtomicOptions non_atomic,
                             std::shared_ptr<const ChunkedImage> second_initial)
    : log_(std::move(log)),
      non_atomic_(std::move(non_atomic)),
      arena_(std::make_shared<std::vector<uint8_t>>()) {
  const uint32_t sector_bytes = log_->sector_bytes();
  bool has_second = second_initial != nullptr;
  for (const LogRecord& record : log_->records()) has_second |= RecordDevice(record) == 1;
  const size_t devices = has_second ? 2 : 1;
  std::array<ChunkedImage, 2> latest = {
      initial ? *initial : ChunkedImage(log_->initial_size_bytes()),
      second_initial ? *second_initial : ChunkedImage()};
  for (size_t d = 0; d < devices; ++d) {
    size_after_[d].reserve(log_->size() + 1);
    size_after_[d].push_back(latest[d].SizeBytes());
    epochs_[d].push_back({0, std::make_shared<const ChunkedImage>(latest[d]), {}});
  }
  for (size_t i = 0; i < log_->size(); ++i) {
    const LogRecord& record = log_->record(i);
    const uint32_t device = RecordDevice(record);
    const uint64_t base_bytes = device == 1 ? kSecondDeviceBaseBytes : 0;
    ChunkedImage& image = latest[device];
    if (record.kind == RecordKind::kFlush || record.kind == RecordKind::kResize) {
      if (record.kind == RecordKind::kResize) image.Resize(RecordDeviceOffset(record));
      // M4, per device (M11): the barrier ends its device's epoch; the next
      // one starts on that device's replay so far.
      epochs_[device].push_back({i + 1, std::make_shared<const ChunkedImage>(image), {}});
    } else {
      image.Write(RecordDeviceOffset(record), log_->DataOf(record));
      if (record.length_bytes != 0) {
        const uint64_t first_sector = record.offset_bytes / sector_bytes;
        const uint64_t last_sector = (record.offset_bytes + record.length_bytes - 1) / sector_bytes;
        for (uint64_t sector = first_sector; sector <= last_sector; ++sector) {
          const uint64_t arena_offset = arena_->size();
          arena_->resize(arena_offset + sector_bytes);
          image.Read(sector * sector_bytes - base_bytes,
                     std::span<uint8_t>(arena_->data() + arena_offset, sector_bytes));
          epochs_[device].back().versions.push_back(
              {sector, i, arena_offset, record.kind == RecordKind::kWriteFua});
        }
      }
    }
    for (size_t d = 0; d < devices; ++d) size_after_[d].push_back(latest[d].SizeBytes());
  }
  for (auto& device_epochs : epochs_) {
    for (Epoch& epoch : device_epochs) {
      std::stable_sort(epoch.versions.begin(), epoch.versions.end(),
                       [](const Version& a, const Version& b) { return a.sector < b.sector; });
    }
  }
}

size_t CrashTimeline::EpochOf(uint64_t point, uint32_t device) const {
  const std::vector<Epoch>& epochs = epochs_[device];
  auto it = std::upper_bound(epochs.begin(), epochs.end(), point,
                             [](uint64_t p, const Epoch& e) { return p < e.first_record; });
  return static_cast<size_t>(it - epochs.begin()) - 1;
}

std::shared_ptr<const ChunkedImage> CrashTimeline::EpochBase(uint64_t point) const {
  return epochs_[0][EpochOf(std::min<uint64_t>(point, log_->size()))].base;
}

std::shared_ptr<const CrashPoint> CrashTimeline::Point(uint64_t point) const {
  assert(point < PointCount());
  auto result = std::make_shared<CrashPoint>();
  CrashPoint& cp = *result;
  cp.point = point;
  cp.size_bytes = size_after_[0][point];
  cp.sector_bytes = log_->sector_bytes();
  cp.non_atomic = non_atomic_;
  if (non_atomic_.enabled && cp.non_atomic.cuts_bytes.empty()) {
    cp.non_atomic.cuts_bytes = CutsOf(non_atomic_, cp.sector_bytes);
  }
  cp.base = epochs_[0][EpochOf(point)].base;
  cp.arena = arena_;
  AddPending(point, 0, cp);
  if (has_second_device()) {
    // The second device's sectors all follow the image's: pending stays sorted.
    cp.second_base = epochs_[1][EpochOf(point, 1)].base;
    cp.second_size_bytes = size_after_[1][point];
    AddPending(point, 1, cp);
  }
  return result;
}

void CrashTimeline::AddPending(uint64_t point, uint32_t device, CrashPoint& cp) const {
  const Epoch& epoch = epochs_[device][EpochOf(point, device)];
  const uint8_t* arena = arena_->data();
  const std::vector<Version>& versions = epoch.versions;
  const ChunkedImage* device_base = (device == 1 ? cp.second_base : cp.base).get();
  const uint64_t base_bytes = device == 1 ? kSecondDeviceBaseBytes : 0;
  const uint64_t sector_bytes = cp.sector_bytes;
  for (size_t i = 0; i < versions.size();) {
    // One sector's versions are adjacent, in record order (M6).
    size_t end = i;
    while (end < versions.size() && versions[end].sector == versions[i].sector) ++end;
    size_t start = i;  // the first pending version after the last FUA before point
    const uint8_t* durable = nullptr;
    uint64_t durable_record = kDurableRecord;
    size_t stop = i;
    for (size_t j = i; j < end && versions[j].record < point; ++j) {
      stop = j + 1;
      if (versions[j].fua) {
        durable = arena + versions[j].arena_offset;
        durable_record = versions[j].record;
        start = j + 1;
      }
    }
    const uint64_t sector = versions[i].sector;
    if (stop > start) {
      PendingSector pending;
      pending.sector = sector;
      pending.first = static_cast<uint32_t>(cp.version_data.size());
      pending.count = static_cast<uint32_t>(stop - start);
      pending.overlay_index = static_cast<uint32_t>(cp.latest_overlay.size());
      if (durable == nullptr && device_base != nullptr) {
        pending.base_data =
            device_base->ContiguousAt(sector * sector_bytes - base_bytes, sector_bytes);
      }
      cp.version_data.push_back(durable);
      cp.version_record.push_back(durable_record);
      for (size_t j = start; j < stop; ++j) {
        cp.version_data.push_back(arena + versions[j].arena_offset);
        cp.version_record.push_back(versions[j].record);
      }
      cp.pending.push_back(pending);
      cp.latest_overlay.push_back({sector, arena + versions[stop - 1].arena_offset});
    } else if (durable != nullptr) {
      cp.latest_overlay.push_back({sector, durable});  // M5: FUA-durable, no choice
    }
    i = end;
  }
}

Result<std::unique_ptr<CrashView>> CrashTimeline::BuildView(const CrashState& state) const {
  if (state.point >= PointCount()) {
    return Status::InvalidArgument("crash point " + std::to_string(state.point) +
                                   " past the end of a log with " + std::to_string(log_->size()) +
                                   " records");
  }
  return BuildView(Point(state.point), state);
}

}  // namespace qcrash::sim
