// RunReportMerge: the merge of shard reports is built on the `shards`
// branch (issue 19 part B); this branch only keeps `qcrash report merge`
// an explicit refusal, so that nobody mistakes it for a merge that ran.
#include "cli/report_merge.h"

#include <cstdio>

namespace qcrash::cli {

int RunReportMerge(int /*argc*/, char** /*argv*/) {
  std::fprintf(stderr, "qcrash report merge: not built in this branch\n");
  return 2;
}

}  // namespace qcrash::cli
