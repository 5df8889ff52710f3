// The journal crash explorer used by the journal property tests (see
// journal_crash.h for what it checks).
#include "tests/journal/journal_crash.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>

#include "engine/check.h"
#include "engine/image.h"
#include "engine/journal.h"
#include "sim/enumerators.h"
#include "sim/sim_disk.h"

namespace qcrash::engine::testing {
namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kSector = 512;

Workload Make(std::string name, uint64_t size, std::vector<Step> steps) {
  Workload w;
  w.name = std::move(name);
  w.initial_size_bytes = size;
  w.steps = std::move(steps);
  return w;
}

Step W(uint64_t block, uint8_t value) { return {Step::kWrite, block, value, 0}; }
Step F() { return {Step::kFlush, 0, 0, 0}; }
Step D(uint64_t block) { return {Step::kDiscard, block, 0, 0}; }
Step G(uint64_t size) { return {Step::kGrow, 0, 0, size}; }

// Guest values allowed per 4 KiB block at a crash point.
struct Oracle {
  std::vector<uint64_t> step_end;  // log size after each step
  const Workload* workload = nullptr;

  // Values each sector of `block` may read after a crash at `point`.
  std::set<uint8_t> Allowed(uint64_t block, uint64_t point) const {
    size_t last_flush = SIZE_MAX;  // index of the last completed flush step
    for (size_t i = 0; i < step_end.size(); ++i) {
      if (step_end[i] > point) break;
      if (workload->steps[i].kind == Step::kFlush) last_flush = i;
    }
    uint8_t durable = 0;
    std::set<uint8_t> allowed;
    for (size_t i = 0; i < workload->steps.size(); ++i) {
      const Step& s = workload->steps[i];
      const uint64_t start = i == 0 ? 0 : step_end[i - 1];
      if (start > point) break;  // not started at the crash (a step may log nothing)
      if ((s.kind != Step::kWrite && s.kind != Step::kDiscard) || s.block != block) continue;
      const uint8_t v = s.kind == Step::kWrite ? s.value : 0;
      if (last_flush != SIZE_MAX && i < last_flush) {
        durable = v;
      } else {
        allowed.insert(v);
      }
    }
    allowed.insert(durable);
    return allowed;
  }
};

struct Checker {
  const Workload& workload;
  const CrashConfig& config;
  const Oracle& oracle;

  // Recovers `device` and checks every invariant; "" when all hold.
  std::string Check(BlockDevice& device, uint64_t point) const {
    OpenOptions open = config.open;
    auto image = Image::Open(device, open);
    if (!image.ok()) return "recovery: open failed: " + image.status().ToString();
    auto report = CheckImage(device, {});
    if (!report.ok()) return "I1/I2: check failed: " + report.status().ToString();
    if (report->corruptions != 0 || report->check_errors != 0) {
      std::string first = report->findings.empty() ? "" : report->findings.front().message;
      for (const Finding& f : report->findings) {
        if (f.severity == Severity::kCorruption) {
          first = f.message;
          break;
        }
      }
      return "I1/I2: " + std::to_string(report->corruptions) + " corruptions: " + first;
    }
    if (std::string i6 = CheckI6(**image); !i6.empty()) return i6;
    std::set<uint64_t> blocks;
    for (const Step& s : workload.steps) {
      if (s.kind == Step::kWrite || s.kind == Step::kDiscard) blocks.insert(s.block);
    }
    std::vector<uint8_t> buffer(kBlock);
    for (uint64_t b : blocks) {
      if ((b + 1) * kBlock > (*image)->size_bytes()) continue;
      const Status read = (*image)->Read(b * kBlock, buffer);
      if (!read.ok())
        return "I5: read of guest block " + std::to_string(b) + ": " + read.ToString();
      const std::set<uint8_t> allowed = oracle.Allowed(b, point);
      for (uint64_t s = 0; s < kBlock; s += kSector) {
        const uint8_t v = buffer[s];
        const bool uniform =
            std::all_of(&buffer[s], &buffer[s] + kSector, [v](uint8_t x) { return x == v; });
        if (!uniform || !allowed.count(v)) {
          return "I4/I5: guest offset " + HexOffset(b * kBlock + s) + " reads " +
                 (uniform ? "0x" + std::to_string(v) : std::string("mixed bytes")) +
                 ", not a value written there";
        }
      }
    }
    return "";
  }

  // I6: replay never wrote into a range a later transaction revoked, nor
  // into a cluster that now holds guest data.
  static std::string CheckI6(Image& image) {
    const ReplayReport& r = image.replay_report();
    if (!r.replayed) return "";
    for (const ReplayedWrite& w : r.writes) {
      for (const ReplayedWrite& v : r.revokes) {
        if (static_cast<int32_t>(v.seq - w.seq) > 0 &&
            w.offset_bytes < v.offset_bytes + v.length_bytes &&
            v.offset_bytes < w.offset_bytes + w.length_bytes) {
          return "I6: replay of seq " + std::to_string(w.seq) + " wrote into " +
                 HexOffset(w.offset_bytes) + ", revoked by seq " + std::to_string(v.seq);
        }
      }
    }
    auto map = image.Map();
    if (!map.ok()) return "I6: map: " + map.status().ToString();
    for (const MapExtent& e : *map) {
      if (!e.data || !e.has_offset || e.depth != 0) continue;
      for (const ReplayedWrite& w : r.writes) {
        if (w.offset_bytes < e.offset + e.length && e.offset < w.offset_bytes + w.length_bytes) {
          return "I6: replay of seq " + std::to_string(w.seq) + " wrote " +
                 std::to_string(w.length_bytes) + " bytes at " + HexOffset(w.offset_bytes) +
                 ", inside guest data at " + HexOffset(e.start);
        }
      }
    }
    return "";
  }
};

Status RunStep(Image& image, const Step& s) {
  switch (s.kind) {
    case Step::kWrite: {
      const std::vector<uint8_t> data(kBlock, s.value);
      return image.Write(s.block * kBlock, data);
    }
    case Step::kFlush:
      return image.Flush();
    case Step::kDiscard:
      return image.Discard(s.block * kBlock, kBlock);
    case Step::kGrow:
      return image.Truncate(s.size_bytes, Preallocation::kOff);
  }
  return Status::Ok();
}

}  // namespace

Workload ThreadScenario() {
  // 4 KiB clusters: one L1 entry covers 2 MiB, so growing past 2 MiB moves the L1.
  return Make("thread-scenario", 1 << 20,
              {W(0, 0xA1), F(), G(8 << 20), W(1, 0xB2), F(), W(2, 0xC3), F()});
}

Workload MixedWorkload() {
  std::vector<Step> steps;
  uint8_t v = 1;
  for (int round = 0; round < 3; ++round) {
    for (uint64_t b : {0, 1, 600, 1100, 5})
      steps.push_back(W(b + static_cast<uint64_t>(round), v++));
    steps.push_back(F());
    steps.push_back(D(1 + static_cast<uint64_t>(round)));
    steps.push_back(W(600, v++));
    steps.push_back(F());
  }
  steps.push_back(G(12 << 20));
  steps.push_back(W(2000, v++));
  steps.push_back(W(1, v++));
  steps.push_back(F());
  return Make("mixed", 6 << 20, steps);
}

CrashResult RunCrashCheck(const Workload& workload, const CrashConfig& config) {
  CrashResult result;
  // Phase 1: a clean image (its creation is not under test).
  sim::SimDisk setup;
  CreateOptions create;
  create.size_bytes = workload.initial_size_bytes;
  create.cluster_bits = 12;
  {
    auto image = Image::Create(setup, create, config.open);
    if (!image.ok() || !(*image)->Close().ok()) {
      result.violations = 1;
      result.first_violation = "setup: " + image.status().ToString();
      return result;
    }
  }
  // Phase 2: the workload, logged, never closed (the crash).
  auto initial = std::make_shared<const sim::ChunkedImage>(setup.latest_image());
  sim::SimDisk disk({.initial_size_bytes = initial->SizeBytes()}, initial);
  Oracle oracle{{}, &workload};
  {
    auto image = Image::Open(disk, config.open);
    if (!image.ok()) {
      result.violations = 1;
      result.first_violation = "open: " + image.status().ToString();
      return result;
    }
    for (const Step& s : workload.steps) {
      const Status st = RunStep(**image, s);
      if (!st.ok()) {
        result.violations = 1;
        result.first_violation = "workload: " + st.ToString();
        return result;
      }
      oracle.step_end.push_back(disk.log().size());
    }
    result.guest_flushes = (*image)->stats().guest_flushes;
    result.device_flushes = (*image)->stats().device_flushes;
  }
  const sim::CrashTimeline timeline = disk.Timeline();
  Checker checker{workload, config, oracle};
  uint64_t best_point = ~uint64_t{0};
  size_t best_deviations = SIZE_MAX;
  for (const std::string& name : config.enumerators) {
    auto spec = sim::ParseEnumeratorSpec(name);
    if (!spec.ok()) continue;
    auto enumerator = sim::CrashEnumerator::Create(timeline, *spec);
    sim::CrashState state;
    while (enumerator->Next(&state)) {
      ++result.states;
      auto view = sim::CrashTimeline::BuildView(enumerator->point(), state);
      if (!view.ok()) continue;
      const bool nested = config.nested_samples != 0 && result.states % 97 == 1;
      if (nested) (*view)->StartLog();
      std::string verdict = checker.Check(**view, state.point);
      if (verdict.empty() && nested) {
        // I8: crash the recovery itself at every prefix, then recover again.
        auto inner = (*view)->NestedTimeline();
        for (uint64_t p = 0; inner.ok() && p < inner->PointCount() && verdict.empty(); ++p) {
          auto again = inner->BuildView({p, {}});
          if (again.ok()) verdict = checker.Check(**again, state.point);
          if (!verdict.empty())
            verdict = "I8 (recovery crashed at nested p" + std::to_string(p) + "): " + verdict;
        }
      }
      if (verdict.empty()) continue;
      ++result.violations;
      if (std::getenv("QCRASH_JOURNAL_DEBUG") && result.violations <= 5) {
        std::fprintf(stderr, "violation: %s %s: %s\n", name.c_str(),
                     sim::FormatCrashStateId(state).c_str(), verdict.c_str());
      }
      const std::string line = name + " " + sim::FormatCrashStateId(state) + ": " + verdict;
      if (result.first_violation.empty()) result.first_violation = line;
      if (state.point < best_point ||
          (state.point == best_point && state.deviations.size() < best_deviations)) {
        best_point = state.point;
        best_deviations = state.deviations.size();
        result.minimal_violation = line;
      }
    }
  }
  return result;
}

}  // namespace qcrash::engine::testing
