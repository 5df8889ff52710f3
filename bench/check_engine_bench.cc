// In-process check times on hostile inputs the fuzzers found slow, as JSON
// (--benchmark_format=json). Moved here from a timed test assertion: speed
// is measured, never asserted.
//   BM_CheckHugeEmptyRefcountTable: a 10 KiB image whose header names the
//   largest refcount table (8 MiB, 1 Mi entries, mostly past the end of the
//   file; corpus/check_fuzzer/regress-slow-8mib-refcount-table). Once ~50 ms
//   per check; empty entries now cost no string building.
#include <benchmark/benchmark.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/memory_device.h"

namespace {

std::vector<uint8_t> ReadCorpusFile(const std::string& name) {
  std::ifstream in(std::string(QCRASH_SOURCE_DIR) + "/corpus/" + name, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void BM_CheckHugeEmptyRefcountTable(benchmark::State& state) {
  qcrash::MemoryDevice device(ReadCorpusFile("check_fuzzer/regress-slow-8mib-refcount-table"));
  for (auto _ : state) {
    auto report = qcrash::engine::CheckImage(device, {qcrash::engine::RepairMode::kNone});
    if (!report.ok()) state.SkipWithError(report.status().ToString().c_str());
    benchmark::DoNotOptimize(report);
  }
}
BENCHMARK(BM_CheckHugeEmptyRefcountTable)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
