// Reproducer directories for explorer violations: the crash image as a real
// .qcow2 file, the (minimized) workload, the crash state and engine options,
// and the raw check's findings; read back by `qcrash replay`.
#pragma once

#include <string>
#include <vector>

#include "engine/status.h"
#include "properties/explorer.h"

namespace qcrash::cli {

struct Reproducer {
  properties::Workload workload;
  properties::RunOptions run;
  properties::RecoveryOptions recovery;
  std::string state_id;
  std::string invariant;
  std::string message;
  std::vector<std::string> bugs;  // --bug names (engine/bug_catalogue.h)
  std::vector<std::string> findings;
};

// Writes dir/{image.qcow2, workload.json, crash.json, findings.txt}.
Status WriteReproducer(const std::string& dir, const Reproducer& reproducer);
Result<Reproducer> ReadReproducer(const std::string& dir);

}  // namespace qcrash::cli
