// `qcrash report`: in this branch only `qcrash report merge` (cli/report_merge.h);
// the HTML rendering lands from another branch, whose report_command.cc
// replaces this one and dispatches `merge` the same way.
#include <cstdio>
#include <cstring>

#include "cli/report_merge.h"

namespace qcrash::cli {

int RunReport(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "merge") == 0) return RunReportMerge(argc - 1, argv + 1);
  std::fprintf(stderr, "qcrash report: HTML rendering is in another branch\n");
  return 2;
}

}  // namespace qcrash::cli
