// JUnit XML for CI systems: one <testcase> per explored workload x policy
// cell, a <failure> carrying the invariant, the state id and the command
// that replays it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/status.h"

namespace qcrash::cli {

struct JunitCase {
  std::string classname;  // the workload
  std::string name;       // policy/enumerator
  double seconds = 0;
  bool failed = false;
  std::string message;  // the failure's one line: "I1 at STATE: ..."
  std::string text;     // every violation, with its replay command
};

// The cases of an explore report (explore --workload, or report merge): one
// case. `report_path` (may be empty) makes the replay command REPORT#N.
JunitCase JunitCaseFromReport(const nlohmann::json& report, const std::string& report_path);
// The cases of a suite report (explore without --workload): one per cell.
std::vector<JunitCase> JunitCasesFromSuite(const nlohmann::json& suite);

// Writes <testsuites><testsuite name=...> with tests= and failures= counts.
Status WriteJunit(const std::string& path, const std::string& suite_name,
                  const std::vector<JunitCase>& cases);

}  // namespace qcrash::cli
