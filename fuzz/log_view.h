// What `qcrash explore` does with a write log, for the log fuzz targets
// (write_log_fuzzer, dm_log_fuzzer): its crash timeline, and the view of
// the last point with a deviation for each of its first 64 pending sectors.
#pragma once

#include <memory>

#include "fuzz/fuzz_support.h"
#include "sim/crash_model.h"
#include "sim/crash_view.h"
#include "sim/write_log.h"

namespace qcrash::fuzz {

// Property: a state of the timeline builds (Fail otherwise).
inline void BuildLastPointView(const sim::WriteLog& log) {
  auto shared = std::make_shared<const sim::WriteLog>(log);
  const sim::CrashTimeline timeline(nullptr, shared);
  const auto point = timeline.Point(timeline.PointCount() - 1);
  sim::CrashState state{point->point, {}};
  for (size_t i = 0; i < point->pending.size() && i < 64; ++i) {
    if (point->ChoiceCount(i) > 1) state.deviations.push_back(point->ChoiceAt(i, 0));
  }
  auto view = sim::CrashTimeline::BuildView(point, state);
  if (!view.ok()) Fail("a state of the timeline builds", view.status().ToString());
}

}  // namespace qcrash::fuzz
