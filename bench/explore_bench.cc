// The explorer's speed: crash states recovered and checked per second on one
// core (the whole pipeline: view, raw check, open, repair, re-check, guest
// read against the oracle), beside the naive pipeline a user would script
// (write each crash image to a file, run `qemu-img check` on it). Prints JSON.
//
//   explore_bench [WORKLOAD] [ENUMERATOR] [NAIVE_STATES]
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/file_device.h"
#include "properties/explorer.h"
#include "sim/crash_view.h"

using namespace qcrash;
using Clock = std::chrono::steady_clock;

static double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int main(int argc, char** argv) {
  const std::string workload_name = argc > 1 ? argv[1] : "default";
  const std::string enumerator = argc > 2 ? argv[2] : "bounded:2";
  const int naive_states = argc > 3 ? std::atoi(argv[3]) : 40;
  properties::ExploreConfig config;
  config.workload = *properties::BuiltinWorkload(workload_name);
  config.enumerator = *sim::ParseEnumeratorSpec(enumerator);
  auto report = properties::Explore(config);
  if (!report.ok()) {
    std::fprintf(stderr, "explore: %s\n", report.status().ToString().c_str());
    return 1;
  }
  // The naive pipeline over the first states of the same enumeration.
  auto run = properties::RunWorkload(config.workload, config.run);
  auto states = sim::CrashEnumerator::Create(*run->timeline, config.enumerator);
  char dir[] = "/tmp/qcrash-bench-XXXXXX";
  if (!::mkdtemp(dir)) return 1;
  const std::string path = std::string(dir) + "/crash.qcow2";
  sim::CrashState state;
  int done = 0;
  const auto start = Clock::now();
  while (done < naive_states && states->Next(&state)) {
    auto view = sim::CrashTimeline::BuildView(states->point(), state);
    std::vector<uint8_t> bytes((*view)->SizeBytes());
    if (!(*view)->Read(0, bytes).ok()) return 1;
    auto file = FileDevice::Open(path, FileDevice::Mode::kCreate);
    if (!file.ok() || !(*file)->Write(0, bytes).ok()) return 1;
    file->reset();
    const std::string command = "qemu-img check -q " + path + " >/dev/null 2>&1";
    const int rc = std::system(command.c_str());
    if (rc == -1 || !WIFEXITED(rc)) return 1;
    ++done;
  }
  const double naive_seconds = Since(start);
  std::remove(path.c_str());
  ::rmdir(dir);
  const double naive_rate = done / naive_seconds;
  std::printf(
      "{\"workload\": \"%s\", \"enumerator\": \"%s\", \"states\": %llu, \"seconds\": %.3f,\n"
      " \"states_per_second_per_core\": %.1f, \"naive_states\": %d, \"naive_seconds\": %.3f,\n"
      " \"naive_states_per_second\": %.1f, \"speedup_vs_naive\": %.1f}\n",
      workload_name.c_str(), enumerator.c_str(),
      static_cast<unsigned long long>(report->states_checked), report->elapsed_seconds,
      report->states_per_second(), done, naive_seconds, naive_rate,
      report->states_per_second() / naive_rate);
  return 0;
}
