// Flushes per guest flush, flushes per allocating guest write and throughput
// of the journal policy against ordered and writethrough, on one workload:
// 64 KiB allocating writes over a 1 GiB disk, a guest flush every 16 writes,
// on a memory device (so the figures measure the engine, not a disk).
#include <benchmark/benchmark.h>

#include <vector>

#include "engine/image.h"
#include "engine/memory_device.h"

namespace qcrash::engine {
namespace {

constexpr uint64_t kWriteBytes = 64 << 10;
constexpr int kWritesPerFlush = 16;

void BM_AllocatingWrites(benchmark::State& state) {
  const auto policy = static_cast<OrderingPolicy>(state.range(0));
  const std::vector<uint8_t> data(kWriteBytes, 0x5A);
  uint64_t guest_writes = 0, guest_flushes = 0, device_flushes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    MemoryDevice device;
    CreateOptions create;
    create.size_bytes = uint64_t{1} << 30;
    OpenOptions open;
    open.policy = policy;
    auto image = std::move(Image::Create(device, create, open)).value();
    const EngineStats before = image->stats();
    state.ResumeTiming();
    for (uint64_t i = 0; i < 1024; ++i) {
      if (!image->Write(i * kWriteBytes, data).ok()) state.SkipWithError("write failed");
      if ((i + 1) % kWritesPerFlush == 0 && !image->Flush().ok())
        state.SkipWithError("flush failed");
    }
    state.PauseTiming();
    guest_writes += image->stats().guest_writes - before.guest_writes;
    guest_flushes += image->stats().guest_flushes - before.guest_flushes;
    device_flushes += image->stats().device_flushes - before.device_flushes;
    state.ResumeTiming();
  }
  state.SetLabel(PolicyName(policy));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 1024 * kWriteBytes);
  state.counters["flushes_per_guest_flush"] =
      static_cast<double>(device_flushes) / static_cast<double>(guest_flushes);
  state.counters["flushes_per_alloc_write"] =
      static_cast<double>(device_flushes) / static_cast<double>(guest_writes);
}
BENCHMARK(BM_AllocatingWrites)
    ->Arg(static_cast<int>(OrderingPolicy::kJournal))
    ->Arg(static_cast<int>(OrderingPolicy::kOrdered))
    ->Arg(static_cast<int>(OrderingPolicy::kWritethrough))
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace qcrash::engine

BENCHMARK_MAIN();
