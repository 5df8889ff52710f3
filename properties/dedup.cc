// StateDeduper: one recovery per metadata state of a crash point.
#include "properties/dedup.h"

#include <algorithm>

#include "properties/recovery_internal.h"
#include "sim/crash_view.h"

namespace qcrash::properties {

using namespace recovery_internal;

namespace {

using ByteRanges = std::vector<std::pair<uint64_t, uint64_t>>;  // [first, second)

constexpr size_t kGroupsPerPointMax = 256;

// A device that forwards to another and records what recovery did to it:
// the byte ranges it read while tracking (the group's read set) and every
// write and resize (replayed onto the other states of the group).
class TracingDevice final : public BlockDevice {
 public:
  struct Change {
    bool resize = false;
    bool fua = false;
    ResizeMode mode = ResizeMode::kSparse;
    uint64_t offset_bytes = 0;  // or the new size
    std::vector<uint8_t> data;
  };

  explicit TracingDevice(BlockDevice& inner) : inner_(inner) {}

  Status Read(uint64_t offset_bytes, std::span<uint8_t> out) override {
    if (tracking_ && !out.empty()) reads_.push_back({offset_bytes, offset_bytes + out.size()});
    return inner_.Read(offset_bytes, out);
  }
  Status Write(uint64_t offset_bytes, std::span<const uint8_t> data) override {
    changes_.push_back(
        {false, false, ResizeMode::kSparse, offset_bytes, {data.begin(), data.end()}});
    return inner_.Write(offset_bytes, data);
  }
  Status WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) override {
    changes_.push_back(
        {false, true, ResizeMode::kSparse, offset_bytes, {data.begin(), data.end()}});
    return inner_.WriteFua(offset_bytes, data);
  }
  Status Flush() override { return inner_.Flush(); }
  uint64_t SizeBytes() const override { return inner_.SizeBytes(); }
  Status Resize(uint64_t size_bytes, ResizeMode mode) override {
    changes_.push_back({true, false, mode, size_bytes, {}});
    return inner_.Resize(size_bytes, mode);
  }
  DeviceGeometry Geometry() const override { return inner_.Geometry(); }

  void StopTracking() { tracking_ = false; }
  const ByteRanges& reads() const { return reads_; }
  std::vector<Change> TakeChanges() { return std::move(changes_); }

 private:
  BlockDevice& inner_;
  bool tracking_ = true;
  ByteRanges reads_;
  std::vector<Change> changes_;
};

Status Replay(const std::vector<TracingDevice::Change>& changes, BlockDevice& device) {
  for (const TracingDevice::Change& c : changes) {
    if (c.resize) {
      QCRASH_RETURN_IF_ERROR(device.Resize(c.offset_bytes, c.mode));
    } else if (c.fua) {
      QCRASH_RETURN_IF_ERROR(device.WriteFua(c.offset_bytes, c.data));
    } else {
      QCRASH_RETURN_IF_ERROR(device.Write(c.offset_bytes, c.data));
    }
  }
  return Status::Ok();
}

ByteRanges SortedMerged(ByteRanges ranges) {
  std::sort(ranges.begin(), ranges.end());
  ByteRanges merged;
  for (const auto& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

bool Intersects(const ByteRanges& sorted, uint64_t begin, uint64_t end) {
  auto it =
      std::upper_bound(sorted.begin(), sorted.end(), std::pair<uint64_t, uint64_t>{begin, ~0ull});
  if (it != sorted.begin() && std::prev(it)->second > begin) return true;
  return it != sorted.end() && it->first < end;
}

// The byte offset of a pending sector in the log's numbering (the second
// device's from kSecondDeviceBaseBytes, M11).
uint64_t SectorByte(const sim::CrashPoint& point, size_t pending_index) {
  return point.pending[pending_index].sector * point.sector_bytes;
}

}  // namespace

// A guest range that reads through a data sector: bytes [byte, byte +
// length) of the sector are guest bytes [guest, guest + length).
struct Piece {
  uint64_t guest = 0;
  uint32_t byte = 0;
  uint32_t length = 0;
};

struct StateDeduper::Group {
  enum class Mode : uint8_t {
    kFull,     // the representative could not be built: every state recovers in full
    kJudge,    // data sectors judged one by one through the recovered mapping
    kContent,  // each state's content checks on its image under the recovery writes
  };
  Mode mode = Mode::kFull;
  bool repaired = false;
  StateResult after_repair;   // steps 1-4 of the representative
  StateResult pre_verdict;    // kJudge: + the content check without the data sectors
  StateResult clean;          // kJudge: the result when every data sector reads right
  std::vector<uint8_t> read;  // per pending sector: this group's recovery read it
  std::vector<TracingDevice::Change> changes[2];  // the recovery's writes, per device
  std::vector<std::vector<Piece>> pieces;         // kJudge: per pending sector
  std::unordered_map<uint64_t, std::vector<ContentViolation>> judged;  // (sector, version)
  std::vector<uint32_t> latest_bad;  // data sectors whose latest version breaks I4/I5
  bool latest_judged = false;
};

struct StateDeduper::PointCache {
  std::shared_ptr<const sim::CrashPoint> point;
  bool classified = false;
  std::vector<uint8_t> data;  // per pending sector: the latest state's recovery did not read it
  std::unordered_map<std::string, std::unique_ptr<Group>> groups;
};

StateDeduper::StateDeduper(const WorkloadRun& run, const GuestOracle& oracle,
                           const RecoveryOptions& options)
    : run_(run), oracle_(oracle), options_(options) {
  // A nested crash of recovery reads every mapped sector of every nested
  // state: nothing to share.
  enabled_ = options.nested_enumerator.empty();
}

StateDeduper::~StateDeduper() = default;

StateDeduper::PointCache& StateDeduper::Load(const std::shared_ptr<const sim::CrashPoint>& point) {
  if (cache_ && cache_->point == point) return *cache_;
  // One point at a time: the enumerators visit a point's states together
  // (random draws are the exception, and share little).
  cache_ = std::make_unique<PointCache>();
  cache_->point = point;
  cache_->data.assign(point->pending.size(), 0);
  return *cache_;
}

void StateDeduper::IndexDeviations(const sim::CrashPoint& point, const sim::CrashState& state) {
  // Both lists are sorted by sector: one forward walk.
  index_.resize(state.deviations.size());
  auto from = point.pending.begin();
  for (size_t d = 0; d < state.deviations.size(); ++d) {
    const uint64_t sector = state.deviations[d].sector;
    from = std::lower_bound(from, point.pending.end(), sector,
                            [](const sim::PendingSector& p, uint64_t s) { return p.sector < s; });
    index_[d] = from != point.pending.end() && from->sector == sector
                    ? static_cast<int64_t>(from - point.pending.begin())
                    : -1;
  }
}

std::string StateDeduper::Key(const PointCache& cache, const sim::CrashState& state) const {
  std::string key;
  for (size_t d = 0; d < state.deviations.size(); ++d) {
    const sim::SectorChoice& c = state.deviations[d];
    const int64_t i = index_[d];
    if (i >= 0 && cache.data[static_cast<size_t>(i)]) continue;
    const uint32_t words[5] = {
        static_cast<uint32_t>(c.sector), static_cast<uint32_t>(c.sector >> 32),
        static_cast<uint32_t>(c.kind) << 24 | c.cut_bytes, c.version, c.second_version};
    key.append(reinterpret_cast<const char*>(words), sizeof(words));
  }
  return key;
}

StateDeduper::Group& StateDeduper::GroupOf(PointCache& cache, const sim::CrashState& state) {
  if (!cache.classified) {
    // The point's first state is its own group's representative: what its
    // recovery did not read is the point's data (RecoverGroup classifies).
    // Its data choices need not be latest: the group's read set excludes
    // every data sector by construction, so no choice of them is seen.
    auto group = RecoverGroup(cache, state);
    Group& g = *group;
    key_ = Key(cache, state);
    cache.groups.emplace(key_, std::move(group));
    return g;
  }
  key_ = Key(cache, state);
  auto found = cache.groups.find(key_);
  if (found != cache.groups.end()) return *found->second;
  sim::CrashState representative{state.point, {}};
  for (size_t d = 0; d < state.deviations.size(); ++d) {
    const int64_t i = index_[d];
    if (i < 0 || !cache.data[static_cast<size_t>(i)])
      representative.deviations.push_back(state.deviations[d]);
  }
  // Bounded memory: a point of many metadata states (bounded:K over a
  // refcount rebuild) keeps the newest groups only.
  if (cache.groups.size() >= kGroupsPerPointMax) cache.groups.clear();
  auto group = RecoverGroup(cache, representative);
  Group& g = *group;
  cache.groups.emplace(key_, std::move(group));
  return g;
}

std::unique_ptr<StateDeduper::Group> StateDeduper::RecoverGroup(
    PointCache& cache, const sim::CrashState& representative) {
  auto group = std::make_unique<Group>();
  Group& g = *group;
  const std::shared_ptr<const sim::CrashPoint>& point = cache.point;
  auto view = sim::CrashView::Build(point, representative);
  std::unique_ptr<sim::CrashView> data_view;
  if (view.ok() && point->second_base) {
    auto built = sim::CrashTimeline::SecondDeviceView(point, representative);
    if (!built.ok()) return group;  // kFull: RecoverState reports it per state
    data_view = std::move(built).value();
  }
  if (!view.ok()) return group;
  ++recoveries_;
  TracingDevice traced(**view);
  std::unique_ptr<TracingDevice> traced_data;
  if (data_view) traced_data = std::make_unique<TracingDevice>(*data_view);
  const ScopedDataFile scoped(traced_data.get());

  // Steps 1-4, reads recorded.
  CheckRaw(traced, g.after_repair);
  g.repaired = Repair(traced, g.after_repair, "", g.after_repair.raw_clean);
  traced.StopTracking();
  if (traced_data) traced_data->StopTracking();
  g.changes[0] = traced.TakeChanges();
  if (traced_data) g.changes[1] = traced_data->TakeChanges();
  ByteRanges reads = traced.reads();
  if (traced_data) {
    for (const auto& [begin, end] : traced_data->reads())
      reads.push_back({begin + sim::kSecondDeviceBaseBytes, end + sim::kSecondDeviceBaseBytes});
  }
  reads = SortedMerged(std::move(reads));
  const size_t pending = point->pending.size();
  g.read.assign(pending, 0);
  for (size_t i = 0; i < pending; ++i) {
    const uint64_t begin = SectorByte(*point, i);
    g.read[i] = Intersects(reads, begin, begin + point->sector_bytes);
  }
  if (!cache.classified) {
    for (size_t i = 0; i < pending; ++i) cache.data[i] = !g.read[i];
    cache.classified = true;
  }

  // Step 5: can the data sectors be judged one by one?
  const bool content_checked = g.repaired;
  const bool whole_map = g.after_repair.raw_refcounts_dirty && g.after_repair.raw_corruptions != 0;
  bool judge = !content_checked || options_.recovery_invariants_only || run_.structural_only;
  GuestRanges skip;
  if (!judge && !point->non_atomic.enabled && run_.snapshot_models.empty() &&
      run_.bitmap_epochs.empty() && !whole_map) {
    judge = true;
    g.pieces.assign(pending, {});
    auto image = OpenStateReadOnly(traced, run_);
    auto map =
        image.ok() ? (*image)->Map() : Result<std::vector<engine::MapExtent>>(image.status());
    const uint64_t size = image.ok() ? (*image)->size_bytes() : 0;
    const bool data_file = !run_.workload.image.data_file.empty();
    const bool backing_recorded = RecordsBacking(run_.workload);
    if (!map.ok()) judge = false;  // CheckContent reports it, state by state
    const GuestRanges& touched = oracle_.touched_ranges();
    for (size_t k = 0; judge && k < map->size(); ++k) {
      const engine::MapExtent& e = (*map)[k];
      if (!e.data) continue;
      if (e.compressed) {
        judge = false;  // a stream: no sector reads through alone
        break;
      }
      if (!e.has_offset) continue;
      // The device the extent's host offset is on, if a crash state has it.
      uint64_t device_base;
      if (e.depth == 0) {
        device_base = data_file ? sim::kSecondDeviceBaseBytes : 0;
      } else if (e.depth == 1 && backing_recorded) {
        device_base = sim::kSecondDeviceBaseBytes;
      } else {
        continue;  // a backing file no crash changes
      }
      const uint64_t extent_end = std::min(e.start + e.length, size);
      auto t = std::upper_bound(touched.begin(), touched.end(),
                                std::pair<uint64_t, uint64_t>{e.start, ~0ull});
      if (t != touched.begin()) --t;
      for (; t != touched.end() && t->first < extent_end; ++t) {
        const uint64_t g0 = std::max(e.start, t->first);
        const uint64_t g1 = std::min(extent_end, t->first + t->second);
        if (g0 >= g1) continue;
        const uint64_t h0 = device_base + e.offset + (g0 - e.start);
        const uint64_t h1 = h0 + (g1 - g0);
        const uint64_t s = point->sector_bytes;
        auto p = std::lower_bound(
            point->pending.begin(), point->pending.end(), h0 / s,
            [](const sim::PendingSector& ps, uint64_t sector) { return ps.sector < sector; });
        for (; p != point->pending.end() && p->sector * s < h1; ++p) {
          const size_t i = static_cast<size_t>(p - point->pending.begin());
          if (!cache.data[i]) continue;
          const uint64_t b0 = std::max(h0, p->sector * s), b1 = std::min(h1, p->sector * s + s);
          const uint64_t guest = g0 + (b0 - h0);
          g.pieces[i].push_back(
              {guest, static_cast<uint32_t>(b0 - p->sector * s), static_cast<uint32_t>(b1 - b0)});
          skip.push_back({guest, guest + (b1 - b0)});
        }
      }
    }
  }
  if (!judge) {
    g.mode = Group::Mode::kContent;
    g.pieces.clear();
    return group;
  }
  g.mode = Group::Mode::kJudge;
  g.changes[0].clear();  // only kContent replays them
  g.changes[1].clear();
  g.pre_verdict = g.after_repair;
  skip = SortedMerged(std::move(skip));
  if (content_checked) CheckContent(traced, run_, oracle_, point->point, g.pre_verdict, "", &skip);
  g.clean = g.pre_verdict;
  SetVerdict(g.repaired, g.clean);
  if (options_.recovery_invariants_only) {
    std::erase_if(g.clean.violations, [](const Violation& v) {
      return v.invariant != "I3" && v.invariant != "I7" && v.invariant != "I8";
    });
    g.pieces.clear();  // content breaks no invariant that counts
  }
  return group;
}

const StateResult& StateDeduper::Recover(const std::shared_ptr<const sim::CrashPoint>& point,
                                         const sim::CrashState& state) {
  if (!enabled_) {
    ++recoveries_;
    result_ = RecoverState(run_, oracle_, point, state, options_);
    return result_;
  }
  PointCache& cache = Load(point);
  IndexDeviations(*point, state);
  Group& g = GroupOf(cache, state);
  auto full = [&]() -> const StateResult& {
    ++recoveries_;
    ++fallbacks_;
    result_ = RecoverState(run_, oracle_, point, state, options_);
    return result_;
  };
  if (g.mode == Group::Mode::kFull) return full();
  // A data sector this group's recovery read (its metadata choices made it
  // metadata, or the state is not one of the point's): the bytes recovery
  // saw would differ, so nothing of the group carries over.
  for (const int64_t i : index_) {
    if (i < 0) return full();
    if (cache.data[static_cast<size_t>(i)] && g.read[static_cast<size_t>(i)]) return full();
  }

  if (g.mode == Group::Mode::kContent) {
    auto view = sim::CrashView::Build(point, state);
    if (!view.ok()) return full();
    std::unique_ptr<sim::CrashView> data_view;
    if (point->second_base) {
      auto built = sim::CrashTimeline::SecondDeviceView(point, state);
      if (!built.ok()) return full();
      data_view = std::move(built).value();
    }
    if (!Replay(g.changes[0], **view).ok() || (data_view && !Replay(g.changes[1], *data_view).ok()))
      return full();
    const ScopedDataFile scoped(data_view.get());
    result_ = g.after_repair;
    if (g.repaired) CheckContent(**view, run_, oracle_, state.point, result_, "");
    if (g.repaired && !run_.structural_only) {
      CheckSnapshots(**view, run_, oracle_, state.point, result_);
      CheckBitmaps(**view, run_, oracle_, state.point, result_);
    }
    SetVerdict(g.repaired, result_);
    if (options_.recovery_invariants_only) {
      std::erase_if(result_.violations, [](const Violation& v) {
        return v.invariant != "I3" && v.invariant != "I7" && v.invariant != "I8";
      });
    }
    return result_;
  }

  // kJudge: each data sector's version against the oracle, once per group.
  if (g.pieces.empty()) return g.clean;
  auto judged = [&](size_t i, uint32_t version) -> const std::vector<ContentViolation>& {
    const uint64_t key = uint64_t{i} << 32 | version;
    auto found = g.judged.find(key);
    if (found != g.judged.end()) return found->second;
    std::vector<ContentViolation>& out = g.judged[key];
    const sim::PendingSector& ps = point->pending[i];
    std::vector<uint8_t> bytes(point->sector_bytes);
    if (const uint8_t* data = point->version_data[ps.first + version]) {
      std::copy(data, data + point->sector_bytes, bytes.begin());
    } else {
      const bool second = ps.sector * point->sector_bytes >= sim::kSecondDeviceBaseBytes;
      const auto& base = second ? point->second_base : point->base;
      const uint64_t at =
          ps.sector * point->sector_bytes - (second ? sim::kSecondDeviceBaseBytes : 0);
      if (base) base->Read(at, bytes);
    }
    for (const Piece& piece : g.pieces[i]) {
      oracle_.Check(point->point, piece.guest,
                    std::span<const uint8_t>(bytes).subspan(piece.byte, piece.length), out);
    }
    return out;
  };
  if (!g.latest_judged) {
    g.latest_judged = true;
    // First state of the group: the data sectors' latest versions, which
    // the representative's content check skipped.
    for (size_t i = 0; i < g.pieces.size(); ++i) {
      if (!g.pieces[i].empty() && !judged(i, point->pending[i].count).empty())
        g.latest_bad.push_back(static_cast<uint32_t>(i));
    }
  }
  content_.clear();
  deviated_.clear();
  for (size_t d = 0; d < state.deviations.size(); ++d) {
    const sim::SectorChoice& c = state.deviations[d];
    const size_t i = static_cast<size_t>(index_[d]);
    if (!cache.data[i] || g.pieces[i].empty()) continue;
    if (c.kind != sim::ChoiceKind::kVersion) return full();  // judged atomic versions only
    deviated_.push_back(static_cast<uint32_t>(i));
    const auto& found = judged(i, c.version);
    content_.insert(content_.end(), found.begin(), found.end());
  }
  for (uint32_t i : g.latest_bad) {
    if (std::find(deviated_.begin(), deviated_.end(), i) != deviated_.end()) continue;
    const auto& found = judged(i, point->pending[i].count);
    content_.insert(content_.end(), found.begin(), found.end());
  }
  if (content_.empty()) return g.clean;
  result_ = g.pre_verdict;
  AddContentViolations(run_, content_, result_, "");
  SetVerdict(g.repaired, result_);
  return result_;
}

}  // namespace qcrash::properties
