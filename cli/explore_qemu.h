// `qcrash explore --engine qemu` and `--log FILE --base IMAGE`: QEMU's own
// qcow2 driver, or any dm-log-writes log, under the crash explorer
// (properties/qemu_engine.h), with `qemu-img check` as the differential
// verdict on the states we call violating and on a sample of all states.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "properties/explorer.h"
#include "properties/qemu_engine.h"

namespace qcrash::cli {

// `qemu-img check` of each violation's image (violations[i]["reproducer"]
// + "/image.qcow2"): adds violations[i]["qemu_img_check"] and returns one
// summary line per violation.
std::vector<std::string> QemuCheckViolations(const std::string& qemu_img,
                                             nlohmann::json& violations);

// `qemu-img check` of `count` states spread over the run's enumeration,
// each beside our own raw check: where the two disagree on "corrupt".
Result<nlohmann::json> QemuCheckSample(const properties::ExploreConfig& config,
                                       const properties::WorkloadRun& run, uint64_t count,
                                       const std::string& qemu_img);

// Writes the raw crash image of state `state_id` of `run` to `path`, the
// workload's backing file beside it.
Status WriteStateImage(const properties::WorkloadRun& run, const std::string& state_id,
                       const std::string& path);

// The QEMU suite: every built-in workload (and `generated` generated ones)
// through qemu-io under `qemu`, each with prefix, drop-one, tear-one and
// epochs (at most `states` states each). Exit 1 on a violating state.
struct QemuSuiteArgs {
  properties::QemuEngineOptions qemu;
  properties::RunOptions run;  // sector size, non-atomic
  uint64_t states = 2000;
  uint64_t generated = 0;
  uint64_t seed = 1;
  bool quick = false;
  std::string report_path;
  std::string reproducers_dir;
};
int RunQemuSuite(const QemuSuiteArgs& args);

}  // namespace qcrash::cli
