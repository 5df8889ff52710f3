// Crash views built and compared per second on a 64 MiB disk with about 50
// pending 4 KiB writes, beside the naive build-by-copy of the same states.
//
// "Compared" means every pending sector of the state is read back through
// the device interface and checked against the version the state chose:
// those are the only bytes that differ between the states of one point (the
// rest is the shared durable base, identical by construction and checked
// once, by BM_CrashViewReadWholeDisk and by the tests).
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "sim/crash_view.h"
#include "sim/sim_disk.h"

namespace qcrash::sim {
namespace {

constexpr uint64_t kDiskBytes = uint64_t{64} << 20;
constexpr uint64_t kWriteBytes = 4096;
constexpr int kPendingWrites = 50;
constexpr size_t kStates = 1024;

struct Fixture {
  std::unique_ptr<CrashTimeline> timeline;
  std::shared_ptr<const CrashPoint> point;
  std::vector<CrashState> states;
  std::vector<uint8_t> durable_flat;  // what the naive build copies
};

// A 64 MiB disk full of data, flushed, then 50 unflushed 4 KiB writes at
// random places (some rewriting earlier ones), and 1024 random states of the
// last point.
const Fixture& GetFixture(uint32_t sector_bytes) {
  static std::unique_ptr<Fixture> fixtures[2];
  std::unique_ptr<Fixture>& fixture = fixtures[sector_bytes == 4096 ? 1 : 0];
  if (fixture) return *fixture;
  fixture = std::make_unique<Fixture>();
  std::mt19937_64 random(42);
  std::vector<uint8_t> initial(kDiskBytes);
  for (size_t i = 0; i < initial.size(); i += 8) {
    const uint64_t word = random();
    std::memcpy(initial.data() + i, &word, 8);
  }
  SimDisk disk({.sector_bytes = sector_bytes},
               std::make_shared<const ChunkedImage>(ChunkedImage::FromBytes(initial)));
  std::vector<uint8_t> data(kWriteBytes);
  for (int i = 0; i < kPendingWrites; ++i) {
    std::memset(data.data(), i + 1, data.size());
    const uint64_t block = random() % (i > 40 ? 64 : kDiskBytes / kWriteBytes);
    if (!disk.Write(block * kWriteBytes, data).ok()) std::abort();
  }
  fixture->timeline = std::make_unique<CrashTimeline>(disk.Timeline());
  fixture->point = fixture->timeline->Point(fixture->timeline->PointCount() - 1);
  fixture->durable_flat = fixture->point->base->Flatten();
  const CrashPoint& point = *fixture->point;
  for (size_t s = 0; s < kStates; ++s) {
    CrashState state{point.point, {}};
    for (size_t i = 0; i < point.pending.size(); ++i) {
      const uint64_t choice = random() % point.ChoiceCount(i);
      if (choice != point.pending[i].count) state.deviations.push_back(point.ChoiceAt(i, choice));
    }
    fixture->states.push_back(std::move(state));
  }
  return *fixture;
}

// The bytes a state's sector must hold: the chosen version, or the base
// (nullptr). Called per pending sector in order, so inlined: a call per
// 512-byte sector was a tenth of the comparing benchmark.
[[gnu::always_inline]] inline const uint8_t* ExpectedSector(const CrashPoint& point,
                                                            const CrashState& state, size_t index,
                                                            size_t* cursor) {
  const PendingSector& pending = point.pending[index];
  uint32_t version = pending.count;
  while (*cursor < state.deviations.size() && state.deviations[*cursor].sector < pending.sector) {
    ++*cursor;
  }
  if (*cursor < state.deviations.size() && state.deviations[*cursor].sector == pending.sector) {
    version = state.deviations[*cursor].version;
  }
  return point.version_data[pending.first + version];
}

void BM_CrashViewBuildAndCompare(benchmark::State& bench) {
  const Fixture& fixture = GetFixture(static_cast<uint32_t>(bench.range(0)));
  const CrashPoint& point = *fixture.point;
  const uint32_t sector_bytes = point.sector_bytes;
  // Runs of adjacent pending sectors are read with one call each, as a
  // consumer reading a 4 KiB block of 512-byte sectors would.
  std::vector<std::pair<size_t, size_t>> runs;  // [first, end) pending indices
  for (size_t i = 0; i < point.pending.size(); ++i) {
    if (runs.empty() || point.pending[i].sector != point.pending[i - 1].sector + 1) {
      runs.push_back({i, i});
    }
    runs.back().second = i + 1;
  }
  std::vector<uint8_t> buffer(point.pending.size() * sector_bytes);
  // The durable version's expected bytes: the epoch's base image in place
  // (its chunks, not the view's pointers), or the flat copy across a chunk
  // edge or a hole.
  std::vector<const uint8_t*> durable(point.pending.size());
  for (size_t i = 0; i < point.pending.size(); ++i) {
    const uint64_t offset = point.pending[i].sector * sector_bytes;
    durable[i] = point.base->ContiguousAt(offset, sector_bytes);
    if (durable[i] == nullptr) durable[i] = fixture.durable_flat.data() + offset;
  }
  size_t next = 0;
  for (auto _ : bench) {
    const CrashState& state = fixture.states[next++ % kStates];
    auto view = CrashView::Build(fixture.point, state);
    if (!view.ok()) bench.SkipWithError("build failed");
    size_t cursor = 0;
    for (const auto& [first, end] : runs) {
      const uint64_t offset = point.pending[first].sector * sector_bytes;
      std::span<uint8_t> run(buffer.data(), (end - first) * sector_bytes);
      if (!(*view)->Read(offset, run).ok()) bench.SkipWithError("read failed");
      // Sectors whose expected bytes are adjacent too are compared at once.
      const uint8_t* expected_run = nullptr;
      size_t run_first = first, run_sectors = 0;
      auto compare = [&] {
        if (run_sectors != 0 && std::memcmp(run.data() + (run_first - first) * sector_bytes,
                                            expected_run, run_sectors * sector_bytes) != 0) {
          bench.SkipWithError("mismatch");
        }
      };
      for (size_t i = first; i < end; ++i) {
        const uint8_t* expected = ExpectedSector(point, state, i, &cursor);
        if (expected == nullptr) expected = durable[i];
        if (run_sectors != 0 && expected == expected_run + run_sectors * sector_bytes) {
          ++run_sectors;
          continue;
        }
        compare();
        expected_run = expected;
        run_first = i;
        run_sectors = 1;
      }
      compare();
    }
  }
  bench.counters["views_per_s"] =
      benchmark::Counter(static_cast<double>(bench.iterations()), benchmark::Counter::kIsRate);
  bench.counters["pending_sectors"] = static_cast<double>(point.pending.size());
}
BENCHMARK(BM_CrashViewBuildAndCompare)->Arg(4096)->Arg(512);

void BM_NaiveCopyBuildAndCompare(benchmark::State& bench) {
  const Fixture& fixture = GetFixture(static_cast<uint32_t>(bench.range(0)));
  const CrashPoint& point = *fixture.point;
  const uint32_t sector_bytes = point.sector_bytes;
  std::vector<uint8_t> image;
  size_t next = 0;
  for (auto _ : bench) {
    const CrashState& state = fixture.states[next++ % kStates];
    image = fixture.durable_flat;  // the full copy of the durable image
    size_t cursor = 0;
    for (size_t i = 0; i < point.pending.size(); ++i) {
      const uint8_t* version = ExpectedSector(point, state, i, &cursor);
      if (version != nullptr) {
        std::memcpy(image.data() + point.pending[i].sector * sector_bytes, version, sector_bytes);
      }
    }
    cursor = 0;
    for (size_t i = 0; i < point.pending.size(); ++i) {
      const uint64_t offset = point.pending[i].sector * sector_bytes;
      const uint8_t* expected = ExpectedSector(point, state, i, &cursor);
      if (expected == nullptr) expected = fixture.durable_flat.data() + offset;
      if (std::memcmp(image.data() + offset, expected, sector_bytes) != 0) {
        bench.SkipWithError("mismatch");
      }
    }
    benchmark::DoNotOptimize(image.data());
  }
  bench.counters["views_per_s"] =
      benchmark::Counter(static_cast<double>(bench.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_NaiveCopyBuildAndCompare)->Arg(4096)->Arg(512)->Unit(benchmark::kMillisecond);

// Building and reading every pending sector back, without the comparison:
// the simulator's own share of BM_CrashViewBuildAndCompare.
void BM_CrashViewBuildAndRead(benchmark::State& bench) {
  const Fixture& fixture = GetFixture(static_cast<uint32_t>(bench.range(0)));
  const CrashPoint& point = *fixture.point;
  const uint32_t sector_bytes = point.sector_bytes;
  std::vector<std::pair<size_t, size_t>> runs;  // as BM_CrashViewBuildAndCompare
  for (size_t i = 0; i < point.pending.size(); ++i) {
    if (runs.empty() || point.pending[i].sector != point.pending[i - 1].sector + 1) {
      runs.push_back({i, i});
    }
    runs.back().second = i + 1;
  }
  std::vector<uint8_t> buffer(point.pending.size() * sector_bytes);
  size_t next = 0;
  for (auto _ : bench) {
    auto view = CrashView::Build(fixture.point, fixture.states[next++ % kStates]);
    if (!view.ok()) bench.SkipWithError("build failed");
    for (const auto& [first, end] : runs) {
      std::span<uint8_t> run(buffer.data(), (end - first) * sector_bytes);
      if (!(*view)->Read(point.pending[first].sector * sector_bytes, run).ok())
        bench.SkipWithError("read failed");
      benchmark::DoNotOptimize(run.data());
    }
  }
  bench.counters["views_per_s"] =
      benchmark::Counter(static_cast<double>(bench.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CrashViewBuildAndRead)->Arg(4096)->Arg(512);

// Building alone: what an explorer pays before recovery reads what it needs.
void BM_CrashViewBuildOnly(benchmark::State& bench) {
  const Fixture& fixture = GetFixture(static_cast<uint32_t>(bench.range(0)));
  size_t next = 0;
  for (auto _ : bench) {
    auto view = CrashView::Build(fixture.point, fixture.states[next++ % kStates]);
    benchmark::DoNotOptimize(view);
  }
  bench.counters["views_per_s"] =
      benchmark::Counter(static_cast<double>(bench.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CrashViewBuildOnly)->Arg(4096)->Arg(512);

// Reading the whole 64 MiB through a view (the cost of a full-disk check).
void BM_CrashViewReadWholeDisk(benchmark::State& bench) {
  const Fixture& fixture = GetFixture(4096);
  auto view = CrashView::Build(fixture.point, fixture.states[0]);
  std::vector<uint8_t> out(kDiskBytes);
  for (auto _ : bench) {
    if (!(*view)->Read(0, out).ok()) bench.SkipWithError("read failed");
    benchmark::DoNotOptimize(out.data());
  }
  bench.SetBytesProcessed(static_cast<int64_t>(bench.iterations() * kDiskBytes));
}
BENCHMARK(BM_CrashViewReadWholeDisk)->Unit(benchmark::kMillisecond);

// The one-time cost of turning the log into a timeline (epoch bases, versions).
void BM_TimelineBuild(benchmark::State& bench) {
  const Fixture& fixture = GetFixture(4096);
  const auto initial = fixture.timeline->EpochBase(0);
  const auto log = std::make_shared<const WriteLog>(fixture.timeline->log());
  for (auto _ : bench) {
    CrashTimeline timeline(initial, log);
    benchmark::DoNotOptimize(timeline.Point(timeline.PointCount() - 1));
  }
}
BENCHMARK(BM_TimelineBuild)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace qcrash::sim

BENCHMARK_MAIN();
