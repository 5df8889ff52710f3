// `qcrash report merge A.json B.json -o ALL.json`: merges the explore
// reports of shards into one. `qcrash report` dispatches to it when its
// first argument is "merge" (argv[0] is then "merge").
#pragma once

namespace qcrash::cli {

int RunReportMerge(int argc, char** argv);

}  // namespace qcrash::cli
