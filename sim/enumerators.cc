// Crash-state enumerators and their closed-form counts (enumerators.h).
#include "sim/enumerators.h"

#include <algorithm>
#include <charconv>
#include <set>
#include <string>
#include <vector>

namespace qcrash::sim {
namespace {

uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The sectors a log record touches: [first, last].
void RecordSectors(const LogRecord& record, uint32_t sector_bytes, uint64_t* first,
                   uint64_t* last) {
  *first = record.offset_bytes / sector_bytes;
  *last = (record.offset_bytes + record.length_bytes - 1) / sector_bytes;
}

bool IsTearable(const LogRecord& record, uint32_t sector_bytes) {
  if (record.kind != RecordKind::kWrite || record.length_bytes == 0) return false;
  uint64_t first = 0;
  uint64_t last = 0;
  RecordSectors(record, sector_bytes, &first, &last);
  return last > first;
}

class PrefixEnumerator final : public CrashEnumerator {
 public:
  explicit PrefixEnumerator(const CrashTimeline& timeline) : CrashEnumerator(timeline) {}
  bool NextUnsharded(CrashState* state) override {
    if (next_point_ >= timeline_.PointCount()) return false;
    LoadPoint(next_point_++);
    *state = {point_->point, {}};
    return true;
  }

 private:
  uint64_t next_point_ = 0;
};

class DropOneEnumerator final : public CrashEnumerator {
 public:
  explicit DropOneEnumerator(const CrashTimeline& timeline) : CrashEnumerator(timeline) {}
  bool NextUnsharded(CrashState* state) override {
    while (true) {
      if (point_ && next_sector_ < point_->pending.size()) {
        *state = {point_->point, {point_->ChoiceAt(next_sector_++, 0)}};
        return true;
      }
      if (next_point_ >= timeline_.PointCount()) return false;
      LoadPoint(next_point_++);
      next_sector_ = 0;
    }
  }

 private:
  uint64_t next_point_ = 0;
  size_t next_sector_ = 0;
};

class TearOneEnumerator final : public CrashEnumerator {
 public:
  explicit TearOneEnumerator(const CrashTimeline& timeline) : CrashEnumerator(timeline) {}
  bool NextUnsharded(CrashState* state) override {
    const uint32_t sector_bytes = timeline_.sector_bytes();
    while (true) {
      if (point_ && next_tear_ <= last_ - first_) {
        // Sectors [first_ + tear, last_] keep the version before the write.
        state->point = point_->point;
        state->deviations.clear();
        for (uint64_t sector = first_ + next_tear_; sector <= last_; ++sector) {
          const int64_t index = point_->FindPending(sector);
          const uint32_t latest = point_->pending[static_cast<size_t>(index)].count;
          state->deviations.push_back({sector, ChoiceKind::kVersion, latest - 1, 0, 0});
        }
        ++next_tear_;
        return true;
      }
      while (next_record_ < timeline_.log().size() &&
             !IsTearable(timeline_.log().record(next_record_), sector_bytes)) {
        ++next_record_;
      }
      if (next_record_ >= timeline_.log().size()) return false;
      RecordSectors(timeline_.log().record(next_record_), sector_bytes, &first_, &last_);
      LoadPoint(++next_record_);
      next_tear_ = 1;
    }
  }

 private:
  uint64_t next_record_ = 0;
  uint64_t first_ = 0;
  uint64_t last_ = 0;
  uint64_t next_tear_ = 1;
};

// Counts up a mixed-radix number; false when it wraps to all zeroes.
bool Odometer(std::vector<uint64_t>& digits, const std::vector<uint64_t>& radix) {
  for (size_t i = digits.size(); i-- > 0;) {
    if (++digits[i] < radix[i]) return true;
    digits[i] = 0;
  }
  return false;
}

std::vector<uint64_t> EpochEnds(const CrashTimeline& timeline);

// Shared by bounded, bounded-ends and exhaustive: walks points (every one,
// or only `points` when given), and per point a sequence of (subset of
// pending sectors, choice per member) in a fixed order.
class SubsetEnumerator final : public CrashEnumerator {
 public:
  SubsetEnumerator(const CrashTimeline& timeline, bool exhaustive, uint64_t bound, uint64_t limit,
                   bool epoch_ends = false)
      : CrashEnumerator(timeline),
        exhaustive_(exhaustive),
        bound_(bound),
        limit_(limit),
        only_points_(epoch_ends) {
    if (epoch_ends) points_ = EpochEnds(timeline);
  }

  bool NextUnsharded(CrashState* state) override {
    while (!has_state_) {
      if (!AdvancePoint()) return false;
    }
    state->point = point_->point;
    state->deviations.clear();
    for (size_t i = 0; i < subset_.size(); ++i) {
      // Alternative a of a sector skips its latest choice (index count).
      const uint64_t latest = point_->pending[subset_[i]].count;
      const uint64_t choice = exhaustive_ ? digits_[i] : digits_[i] + (digits_[i] >= latest);
      if (exhaustive_ && choice == latest) continue;
      state->deviations.push_back(point_->ChoiceAt(subset_[i], choice));
    }
    has_state_ = Odometer(digits_, radix_) || NextSubset();
    return true;
  }

  bool SkipUnsharded() override {
    while (!has_state_) {
      if (!AdvancePoint()) return false;
    }
    has_state_ = Odometer(digits_, radix_) || NextSubset();
    return true;
  }

 private:
  bool AdvancePoint() {
    if (next_point_ >= (only_points_ ? points_.size() : timeline_.PointCount())) return false;
    const uint64_t p = next_point_++;
    LoadPoint(only_points_ ? points_[p] : p);
    const size_t m = point_->pending.size();
    if (exhaustive_) {
      uint64_t product = 1;
      for (size_t i = 0; i < m; ++i) product = SaturatingMul(product, point_->ChoiceCount(i));
      if (product > limit_) {
        ++skipped_points_;
        has_state_ = false;
        return true;
      }
      subset_.resize(m);
      for (size_t i = 0; i < m; ++i) subset_[i] = i;
    } else {
      subset_.clear();  // size 0 first: the latest state
    }
    ResetDigits();
    has_state_ = true;
    return true;
  }

  void ResetDigits() {
    digits_.assign(subset_.size(), 0);
    radix_.resize(subset_.size());
    for (size_t i = 0; i < subset_.size(); ++i) {
      radix_[i] = point_->ChoiceCount(subset_[i]) - (exhaustive_ ? 0 : 1);
    }
  }

  // The next subset of pending sectors in (size, lexicographic) order.
  bool NextSubset() {
    if (exhaustive_) return false;
    const size_t m = point_->pending.size();
    const size_t k = subset_.size();
    size_t i = k;
    while (i > 0 && subset_[i - 1] == m - k + i - 1) --i;
    if (i > 0) {
      ++subset_[i - 1];
      for (size_t j = i; j < k; ++j) subset_[j] = subset_[j - 1] + 1;
    } else {
      if (k + 1 > bound_ || k + 1 > m) return false;
      subset_.resize(k + 1);
      for (size_t j = 0; j <= k; ++j) subset_[j] = j;
    }
    ResetDigits();
    return true;
  }

  bool exhaustive_;
  uint64_t bound_;
  uint64_t limit_;
  bool only_points_;
  std::vector<uint64_t> points_;  // only_points_: the epochs' last points
  uint64_t next_point_ = 0;
  bool has_state_ = false;
  std::vector<size_t> subset_;
  std::vector<uint64_t> digits_;
  std::vector<uint64_t> radix_;
};

// The indices of point's pending sectors that are data: every pending
// version (1..v) written by a record data_records marks.
std::vector<size_t> DataSectorIndices(const CrashPoint& point,
                                      const std::vector<bool>* data_records) {
  std::vector<size_t> out;
  if (data_records == nullptr) return out;
  for (size_t i = 0; i < point.pending.size(); ++i) {
    const PendingSector& s = point.pending[i];
    bool data = true;
    for (uint32_t v = 1; v <= s.count && data; ++v) {
      const uint64_t record = point.version_record[s.first + v];
      data = record < data_records->size() && (*data_records)[record];
    }
    if (data) out.push_back(i);
  }
  return out;
}

// data:<limit> (EnumeratorKind::kData), in two rounds over the points: each
// point's first kDataFirstRound states, then the rest of each point's. A cut
// (a cap, a time budget) in the second round has still reached every point
// with its likeliest break: every data sector durable under the latest
// metadata, then the last few data sectors landed one by one.
constexpr uint64_t kDataFirstRound = 16;

class DataEnumerator final : public CrashEnumerator {
 public:
  DataEnumerator(const CrashTimeline& timeline, std::shared_ptr<const std::vector<bool>> records,
                 uint64_t limit)
      : CrashEnumerator(timeline), records_(std::move(records)), limit_(limit) {}

  bool NextUnsharded(CrashState* state) override {
    while (left_ == 0) {
      if (!AdvancePoint()) return false;
    }
    state->point = point_->point;
    state->deviations.clear();
    for (size_t i = 0; i < subset_.size(); ++i) {
      if (digits_[i] == point_->pending[subset_[i]].count) continue;  // latest
      state->deviations.push_back(point_->ChoiceAt(subset_[i], digits_[i]));
    }
    Step();
    return true;
  }

  bool SkipUnsharded() override {
    while (left_ == 0) {
      if (!AdvancePoint()) return false;
    }
    Step();
    return true;
  }

 private:
  void Step() {
    if (--left_ > 0) Odometer(digits_, radix_);
  }

  // The next point with states left in this round (the second round starts
  // over from point 0); false at the end of the second.
  bool AdvancePoint() {
    if (next_point_ >= timeline_.PointCount()) {
      if (second_round_) return false;
      second_round_ = true;
      next_point_ = 0;
    }
    LoadPoint(next_point_++);
    subset_ = DataSectorIndices(*point_, records_.get());
    radix_.resize(subset_.size());
    uint64_t product = 1;
    for (size_t i = 0; i < subset_.size(); ++i) {
      radix_[i] = point_->ChoiceCount(subset_[i]);
      product = SaturatingMul(product, radix_[i]);
    }
    const uint64_t total = std::max<uint64_t>(1, std::min(product, limit_));
    const uint64_t first = std::min(total, kDataFirstRound);
    left_ = second_round_ ? total - first : first;
    // Odometer order, the last digit fastest: the round starts at state 0,
    // or at state `first` (its mixed-radix digits).
    digits_.assign(subset_.size(), 0);
    uint64_t start = second_round_ ? first : 0;
    for (size_t i = subset_.size(); i-- > 0 && start > 0;) {
      digits_[i] = start % radix_[i];
      start /= radix_[i];
    }
    return true;
  }

  std::shared_ptr<const std::vector<bool>> records_;
  uint64_t limit_;
  uint64_t next_point_ = 0;
  bool second_round_ = false;
  uint64_t left_ = 0;  // states still to yield at the loaded point, this round
  std::vector<size_t> subset_;
  std::vector<uint64_t> digits_;
  std::vector<uint64_t> radix_;
};

// The number of crash states per point (the product of its sectors'
// choices), as cumulative ends; empty when the total passes 2^62, where
// states are drawn with replacement (a repeat is then improbable).
std::vector<uint64_t> StateEnds(const CrashTimeline& timeline) {
  constexpr uint64_t kMax = uint64_t{1} << 62;
  std::vector<uint64_t> ends;
  uint64_t total = 0;
  for (uint64_t p = 0; p < timeline.PointCount(); ++p) {
    const auto point = timeline.Point(p);
    uint64_t product = 1;
    for (size_t i = 0; i < point->pending.size() && product <= kMax; ++i)
      product = SaturatingMul(product, point->ChoiceCount(i));
    total = SaturatingAdd(total, product);
    if (total > kMax) return {};
    ends.push_back(total);
  }
  return ends;
}

// Sampling without replacement: N distinct state indices of the whole space
// (Floyd's algorithm), in an order shuffled by the seed, each decoded into
// its point and per-sector choices. When the space holds N states or fewer,
// every state is drawn once.
class RandomEnumerator final : public CrashEnumerator {
 public:
  RandomEnumerator(const CrashTimeline& timeline, uint64_t seed, uint64_t samples)
      : CrashEnumerator(timeline), seed_(seed), samples_(samples), ends_(StateEnds(timeline)) {
    if (ends_.empty()) return;
    const uint64_t space = ends_.back();
    const uint64_t n = std::min(samples_, space);
    std::set<uint64_t> chosen;
    for (uint64_t j = space - n; j < space; ++j) {
      const uint64_t t = Mix64(seed_ ^ Mix64(j)) % (j + 1);
      chosen.insert(chosen.count(t) ? j : t);
    }
    order_.assign(chosen.begin(), chosen.end());
    std::sort(order_.begin(), order_.end(), [this](uint64_t a, uint64_t b) {
      const uint64_t ka = Mix64(seed_ + a), kb = Mix64(seed_ + b);
      return ka != kb ? ka < kb : a < b;
    });
  }

  bool NextUnsharded(CrashState* state) override {
    if (!ends_.empty()) return NextDistinct(state);
    if (next_sample_ >= samples_) return false;
    // Each sample has its own stream, so sample k does not depend on the others.
    uint64_t stream = Mix64(seed_ ^ Mix64(next_sample_++));
    LoadPoint(Mix64(stream++) % timeline_.PointCount());
    state->point = point_->point;
    state->deviations.clear();
    for (size_t i = 0; i < point_->pending.size(); ++i) {
      const uint64_t choice = Mix64(stream++) % point_->ChoiceCount(i);
      if (choice == point_->pending[i].count) continue;  // latest
      state->deviations.push_back(point_->ChoiceAt(i, choice));
    }
    return true;
  }

 private:
  bool NextDistinct(CrashState* state) {
    if (next_sample_ >= order_.size()) return false;
    const uint64_t index = order_[next_sample_++];
    const size_t p =
        static_cast<size_t>(std::upper_bound(ends_.begin(), ends_.end(), index) - ends_.begin());
    LoadPoint(p);
    uint64_t local = index - (p == 0 ? 0 : ends_[p - 1]);
    state->point = point_->point;
    state->deviations.clear();
    for (size_t i = 0; i < point_->pending.size(); ++i) {
      const uint64_t choices = point_->ChoiceCount(i);
      const uint64_t choice = local % choices;
      local /= choices;
      if (choice == point_->pending[i].count) continue;  // latest
      state->deviations.push_back(point_->ChoiceAt(i, choice));
    }
    return true;
  }

  uint64_t seed_;
  uint64_t samples_;
  uint64_t next_sample_ = 0;
  std::vector<uint64_t> ends_;   // StateEnds; empty: draw with replacement
  std::vector<uint64_t> order_;  // the chosen state indices, in drawing order
};

// The last point of every flush epoch that has a pending write, those that
// write the device's first sector first (each group in log order).
std::vector<uint64_t> EpochEnds(const CrashTimeline& timeline) {
  std::vector<uint64_t> header_epochs, other_epochs;
  bool has_write = false, writes_header = false;
  const auto end_epoch = [&](uint64_t point) {
    if (has_write) (writes_header ? header_epochs : other_epochs).push_back(point);
    has_write = writes_header = false;
  };
  const WriteLog& log = timeline.log();
  for (uint64_t i = 0; i < log.size(); ++i) {
    const LogRecord& record = log.record(i);
    if (record.kind == RecordKind::kFlush || record.kind == RecordKind::kResize) {
      end_epoch(i);
    } else if (record.kind == RecordKind::kWrite && record.length_bytes != 0) {
      has_write = true;
      writes_header |= record.offset_bytes < timeline.sector_bytes();
    }
  }
  end_epoch(log.size());
  header_epochs.insert(header_epochs.end(), other_epochs.begin(), other_epochs.end());
  return header_epochs;
}

// The states of one epoch's last point (the epochs enumerator): per write
// record with a pending version, the record lost and the record landed
// alone, without repeats or the prefix state, header writes first. With
// `out` null only counts them.
uint64_t EpochStates(const CrashTimeline& timeline, const CrashPoint& p,
                     std::vector<CrashState>* out) {
  std::vector<uint64_t> records;  // the records of the pending versions, in log order
  for (const PendingSector& s : p.pending) {
    for (uint32_t k = 1; k <= s.count; ++k) records.push_back(p.version_record[s.first + k]);
  }
  std::sort(records.begin(), records.end());
  records.erase(std::unique(records.begin(), records.end()), records.end());
  // A header write first: a capped run still sees the switch lost and the
  // switch landed alone.
  std::stable_partition(records.begin(), records.end(), [&](uint64_t r) {
    return timeline.log().record(r).offset_bytes < timeline.sector_bytes();
  });
  // Repeats are found by a hash of the deviations (sector, choice index).
  std::set<uint64_t> seen;
  uint64_t count = 0;
  std::vector<std::pair<size_t, uint32_t>> lost, alone;  // (pending index, version)
  const auto add = [&](const std::vector<std::pair<size_t, uint32_t>>& deviations) {
    if (deviations.empty()) return;  // the prefix state: prefix has it
    uint64_t hash = 0x51ed270b2b2d1e11ULL;
    for (const auto& [i, version] : deviations) hash = Mix64(hash ^ Mix64((i << 20) ^ version));
    if (!seen.insert(hash).second) return;
    ++count;
    if (out == nullptr) return;
    CrashState state{p.point, {}};
    for (const auto& [i, version] : deviations) state.deviations.push_back(p.ChoiceAt(i, version));
    out->push_back(std::move(state));
  };
  for (const uint64_t r : records) {
    lost.clear();
    alone.clear();
    for (size_t i = 0; i < p.pending.size(); ++i) {
      const PendingSector& s = p.pending[i];
      uint32_t version_of_r = 0;  // 0: r did not write this sector
      for (uint32_t k = 1; k <= s.count; ++k) {
        if (p.version_record[s.first + k] == r) version_of_r = k;
      }
      if (version_of_r == s.count) lost.emplace_back(i, s.count - 1);
      if (version_of_r != s.count) alone.emplace_back(i, version_of_r);
    }
    add(lost);
    add(alone);
  }
  return count;
}

class EpochEnumerator final : public CrashEnumerator {
 public:
  explicit EpochEnumerator(const CrashTimeline& timeline)
      : CrashEnumerator(timeline), ends_(EpochEnds(timeline)) {}

  bool NextUnsharded(CrashState* state) override {
    while (true) {
      if (next_state_ < states_.size()) {
        *state = std::move(states_[next_state_++]);
        return true;
      }
      if (next_end_ >= ends_.size()) return false;
      LoadPoint(ends_[next_end_++]);
      states_.clear();
      next_state_ = 0;
      EpochStates(timeline_, *point_, &states_);
    }
  }

 private:
  std::vector<uint64_t> ends_;
  size_t next_end_ = 0;
  std::vector<CrashState> states_;
  size_t next_state_ = 0;
};

bool ParseU64(std::string_view text, uint64_t* value) {
  if (text.empty()) return false;
  auto [ptr, error] = std::from_chars(text.data(), text.data() + text.size(), *value);
  return error == std::errc() && ptr == text.data() + text.size();
}

// e_0..e_k of the values (elementary symmetric sums), saturating.
std::vector<uint64_t> ElementarySums(const std::vector<uint64_t>& values, uint64_t k) {
  std::vector<uint64_t> e(static_cast<size_t>(std::min<uint64_t>(k, values.size())) + 1, 0);
  e[0] = 1;
  for (uint64_t value : values) {
    for (size_t j = e.size() - 1; j >= 1; --j)
      e[j] = SaturatingAdd(e[j], SaturatingMul(e[j - 1], value));
  }
  return e;
}

}  // namespace

uint64_t SaturatingAdd(uint64_t a, uint64_t b) { return a + b < a ? ~uint64_t{0} : a + b; }
uint64_t SaturatingMul(uint64_t a, uint64_t b) {
  if (a != 0 && b > ~uint64_t{0} / a) return ~uint64_t{0};
  return a * b;
}

void CrashEnumerator::LoadPoint(uint64_t p) {
  if (!point_ || point_->point != p) point_ = timeline_.Point(p);
}

bool CrashEnumerator::Next(CrashState* state) {
  // Another shard's states are stepped over, not built.
  while (shard_count_ > 1 && index_ % shard_count_ != shard_index_) {
    if (!SkipUnsharded()) return false;
    ++index_;
  }
  if (!NextUnsharded(state)) return false;
  ++index_;
  return true;
}

std::unique_ptr<CrashEnumerator> CrashEnumerator::Create(const CrashTimeline& timeline,
                                                         const EnumeratorSpec& spec) {
  std::unique_ptr<CrashEnumerator> result;
  switch (spec.kind) {
    case EnumeratorKind::kPrefix:
      result = std::make_unique<PrefixEnumerator>(timeline);
      break;
    case EnumeratorKind::kDropOne:
      result = std::make_unique<DropOneEnumerator>(timeline);
      break;
    case EnumeratorKind::kTearOne:
      result = std::make_unique<TearOneEnumerator>(timeline);
      break;
    case EnumeratorKind::kBounded:
      result = std::make_unique<SubsetEnumerator>(timeline, false, spec.bound, 0);
      break;
    case EnumeratorKind::kExhaustive:
      result = std::make_unique<SubsetEnumerator>(timeline, true, 0, spec.limit);
      break;
    case EnumeratorKind::kRandom:
      result = std::make_unique<RandomEnumerator>(timeline, spec.seed, spec.samples);
      break;
    case EnumeratorKind::kEpochs:
      result = std::make_unique<EpochEnumerator>(timeline);
      break;
    case EnumeratorKind::kBoundedEnds:
      result = std::make_unique<SubsetEnumerator>(timeline, false, spec.bound, 0, true);
      break;
    case EnumeratorKind::kData:
      result = std::make_unique<DataEnumerator>(timeline, spec.data_records, spec.limit);
      break;
  }
  result->shard_count_ = spec.shard_count == 0 ? 1 : spec.shard_count;
  result->shard_index_ = spec.shard_index;
  return result;
}

uint64_t CountCrashStates(const CrashTimeline& timeline, const EnumeratorSpec& spec) {
  uint64_t total = 0;
  if (spec.kind == EnumeratorKind::kEpochs) {
    // No closed form (repeats are dropped): counted point by point, without
    // building the states.
    for (const uint64_t end : EpochEnds(timeline))
      total += EpochStates(timeline, *timeline.Point(end), nullptr);
  } else if (spec.kind == EnumeratorKind::kPrefix) {
    total = timeline.PointCount();
  } else if (spec.kind == EnumeratorKind::kData) {
    for (uint64_t p = 0; p < timeline.PointCount(); ++p) {
      const auto point = timeline.Point(p);
      uint64_t product = 1;
      for (const size_t i : DataSectorIndices(*point, spec.data_records.get()))
        product = SaturatingMul(product, point->ChoiceCount(i));
      total = SaturatingAdd(total, std::max<uint64_t>(1, std::min(product, spec.limit)));
    }
  } else if (spec.kind == EnumeratorKind::kRandom) {
    const std::vector<uint64_t> ends = StateEnds(timeline);
    total = ends.empty() ? spec.samples : std::min(spec.samples, ends.back());
  } else if (spec.kind == EnumeratorKind::kTearOne) {
    for (const LogRecord& record : timeline.log().records()) {
      if (!IsTearable(record, timeline.sector_bytes())) continue;
      uint64_t first = 0;
      uint64_t last = 0;
      RecordSectors(record, timeline.sector_bytes(), &first, &last);
      total += last - first;
    }
  } else {
    std::vector<uint64_t> points;
    if (spec.kind == EnumeratorKind::kBoundedEnds) {
      points = EpochEnds(timeline);
    } else {
      for (uint64_t p = 0; p < timeline.PointCount(); ++p) points.push_back(p);
    }
    for (const uint64_t p : points) {
      const auto point = timeline.Point(p);
      const size_t m = point->pending.size();
      if (spec.kind == EnumeratorKind::kDropOne) {
        total += m;
        continue;
      }
      std::vector<uint64_t> alternatives(m);
      uint64_t product = 1;
      for (size_t i = 0; i < m; ++i) {
        alternatives[i] = point->ChoiceCount(i) - 1;
        product = SaturatingMul(product, point->ChoiceCount(i));
      }
      if (spec.kind == EnumeratorKind::kExhaustive) {
        if (product <= spec.limit) total = SaturatingAdd(total, product);
        continue;
      }
      for (uint64_t e : ElementarySums(alternatives, spec.bound)) total = SaturatingAdd(total, e);
    }
  }
  const uint64_t n = spec.shard_count == 0 ? 1 : spec.shard_count;
  return total / n + (spec.shard_index < total % n ? 1 : 0);
}

Result<EnumeratorSpec> ParseEnumeratorSpec(std::string_view text) {
  EnumeratorSpec spec;
  const auto bad = [&](const char* what) {
    return Status::InvalidArgument("enumerator \"" + std::string(text) + "\": " + what);
  };
  std::string_view body = text;
  if (const size_t at = text.find('@'); at != std::string_view::npos) {
    body = text.substr(0, at);
    const std::string_view shard = text.substr(at + 1);
    const size_t slash = shard.find('/');
    if (slash == std::string_view::npos || !ParseU64(shard.substr(0, slash), &spec.shard_index) ||
        !ParseU64(shard.substr(slash + 1), &spec.shard_count) || spec.shard_count == 0 ||
        spec.shard_index >= spec.shard_count) {
      return bad("shard must be @<i>/<N> with 0 <= i < N");
    }
  }
  const size_t colon = body.find(':');
  const std::string_view name = body.substr(0, colon);
  const std::string_view args = colon == std::string_view::npos ? "" : body.substr(colon + 1);
  if (name == "prefix" || name == "drop-one" || name == "tear-one" || name == "epochs") {
    if (!args.empty()) return bad("takes no arguments");
    spec.kind = name == "prefix"     ? EnumeratorKind::kPrefix
                : name == "drop-one" ? EnumeratorKind::kDropOne
                : name == "epochs"   ? EnumeratorKind::kEpochs
                                     : EnumeratorKind::kTearOne;
  } else if (name == "bounded" || name == "bounded-ends") {
    spec.kind = name == "bounded" ? EnumeratorKind::kBounded : EnumeratorKind::kBoundedEnds;
    if (!ParseU64(args, &spec.bound)) return bad("expected bounded:<K> or bounded-ends:<K>");
  } else if (name == "exhaustive") {
    spec.kind = EnumeratorKind::kExhaustive;
    if (!ParseU64(args, &spec.limit)) return bad("expected exhaustive:<limit>");
  } else if (name == "data") {
    spec.kind = EnumeratorKind::kData;
    if (!ParseU64(args, &spec.limit) || spec.limit == 0)
      return bad("expected data:<limit>, limit >= 1");
  } else if (name == "random") {
    spec.kind = EnumeratorKind::kRandom;
    const size_t split = args.find(':');
    if (split == std::string_view::npos || !ParseU64(args.substr(0, split), &spec.seed) ||
        !ParseU64(args.substr(split + 1), &spec.samples)) {
      return bad("expected random:<seed>:<N>");
    }
  } else {
    return bad(
        "unknown kind (prefix, drop-one, tear-one, bounded, exhaustive, random, epochs, "
        "bounded-ends, data)");
  }
  return spec;
}

std::string FormatEnumeratorSpec(const EnumeratorSpec& spec) {
  std::string text;
  switch (spec.kind) {
    case EnumeratorKind::kPrefix:
      text = "prefix";
      break;
    case EnumeratorKind::kDropOne:
      text = "drop-one";
      break;
    case EnumeratorKind::kTearOne:
      text = "tear-one";
      break;
    case EnumeratorKind::kBounded:
      text = "bounded:" + std::to_string(spec.bound);
      break;
    case EnumeratorKind::kExhaustive:
      text = "exhaustive:" + std::to_string(spec.limit);
      break;
    case EnumeratorKind::kRandom:
      text = "random:" + std::to_string(spec.seed) + ":" + std::to_string(spec.samples);
      break;
    case EnumeratorKind::kEpochs:
      text = "epochs";
      break;
    case EnumeratorKind::kBoundedEnds:
      text = "bounded-ends:" + std::to_string(spec.bound);
      break;
    case EnumeratorKind::kData:
      text = "data:" + std::to_string(spec.limit);
      break;
  }
  if (spec.shard_count > 1) {
    text += "@" + std::to_string(spec.shard_index) + "/" + std::to_string(spec.shard_count);
  }
  return text;
}

}  // namespace qcrash::sim
