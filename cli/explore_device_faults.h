// `qcrash explore --device-fault lying-flush|misdirect`: the device-fault
// measurements of properties/device_faults.h, apart from the crash
// exploration proper.
#pragma once

namespace qcrash::cli {

// When argv holds --device-fault, runs the measurement and returns its exit
// status (0 when it ran, 2 on bad usage or an I/O error); otherwise -1 and
// `qcrash explore` goes on as usual.
int RunDeviceFaultIfAsked(int argc, char** argv);

}  // namespace qcrash::cli
