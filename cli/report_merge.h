// `qcrash report merge A.json B.json ... -o ALL.json [--junit FILE.xml]`: the
// reports of the shards of one explore run (--shard i/N, or a shard taken
// from a batch runner's environment) added up into the report the unsharded
// run writes. cli/report_command.cc dispatches `qcrash report merge` here.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/status.h"

namespace qcrash::cli {

// The merge of explore reports (parsed JSON), each with its file name for
// the messages: the shards must be of one run (same workload, policy,
// enumerator but for the shard, seed, sector size, bugs, engine) and be all
// N shards of it, each once.
Result<nlohmann::json> MergeExploreReports(const std::vector<std::string>& names,
                                           const std::vector<nlohmann::json>& reports);

// argv[0] is "merge". Exit 0 when the merged run is clean, 1 when it has a
// violation (as explore's), 2 on usage or input errors.
int RunReportMerge(int argc, char** argv);

}  // namespace qcrash::cli
