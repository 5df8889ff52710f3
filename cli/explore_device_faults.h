// `qcrash explore --device-fault lying-flush|misdirect`: the device-fault
// measurements of properties/device_faults.h, apart from the crash
// exploration proper.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace qcrash::cli {

// Writes an explore JSON report to `path` (nothing when empty) and says
// where; false when it could not be written (explore_device_faults.cc).
bool WriteReport(const std::string& path, const nlohmann::json& json);

// When argv holds --device-fault, runs the measurement and returns its exit
// status (0 when it ran, 2 on bad usage or an I/O error); otherwise -1 and
// `qcrash explore` goes on as usual.
int RunDeviceFaultIfAsked(int argc, char** argv);

}  // namespace qcrash::cli
