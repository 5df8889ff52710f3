// RapidCheck generators shared by the sim properties: a random initial image
// and write log (every record kind, partial sectors, growth, shrinking), and
// a random crash state valid at a point.
#pragma once

#include <rapidcheck.h>

#include <memory>
#include <vector>

#include "sim/crash_model.h"
#include "sim/write_log.h"

namespace qcrash::sim::testing {

struct RandomHistory {
  std::vector<uint8_t> initial;
  std::shared_ptr<WriteLog> log;
};

inline std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return bytes;
}

// Must be called inside a RapidCheck property.
inline RandomHistory GenRandomHistory(int max_records = 24) {
  const uint32_t sector_bytes = *rc::gen::element(512u, 4096u);
  const uint64_t span_bytes = uint64_t{12} * sector_bytes;
  RandomHistory history;
  history.initial =
      Pattern(*rc::gen::inRange<uint64_t>(0, span_bytes), *rc::gen::arbitrary<uint8_t>());
  history.log = std::make_shared<WriteLog>(sector_bytes, history.initial.size());
  const int records = *rc::gen::resize(100, rc::gen::inRange(0, max_records + 1));
  for (int i = 0; i < records; ++i) {
    // gen::inRange scales with RapidCheck's size; the record kind must not, or
    // small cases would hold writes only.
    const int kind = *rc::gen::resize(100, rc::gen::inRange(0, 20));
    if (kind < 15) {
      // Sector-aligned most of the time, partial sectors sometimes.
      const bool aligned = *rc::gen::inRange(0, 3) != 0;
      const uint64_t offset = aligned ? *rc::gen::inRange<uint64_t>(0, 12) * sector_bytes
                                      : *rc::gen::inRange<uint64_t>(0, span_bytes);
      const uint64_t length = aligned ? *rc::gen::inRange<uint64_t>(0, 4) * sector_bytes
                                      : *rc::gen::inRange<uint64_t>(0, 3 * sector_bytes);
      history.log->AppendWrite(offset, Pattern(length, *rc::gen::arbitrary<uint8_t>()),
                               kind >= 13);  // 2 in 20 records are FUA writes
    } else if (kind < 19) {
      history.log->AppendFlush();
    } else {
      history.log->AppendResize(*rc::gen::inRange<uint64_t>(0, span_bytes + 1));
    }
  }
  return history;
}

// A random state at a random point: every pending sector gets any of its
// choices (non-atomic ones included when the timeline allows them).
inline CrashState GenStateAt(const CrashPoint& point) {
  CrashState state;
  state.point = point.point;
  for (size_t i = 0; i < point.pending.size(); ++i) {
    const uint64_t choice = *rc::gen::inRange<uint64_t>(0, point.ChoiceCount(i));
    if (choice == point.pending[i].count) continue;
    state.deviations.push_back(point.ChoiceAt(i, choice));
  }
  return state;
}

}  // namespace qcrash::sim::testing
