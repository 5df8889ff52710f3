// `qcrash check`: qemu-img check over engine::CheckImage (see check_command.cc).
#pragma once

namespace qcrash::cli {

// argv[0] is "check"; returns qemu-img check's exit code.
int RunCheck(int argc, char** argv);

}  // namespace qcrash::cli
