// Runs the explorer on N forked workers, one shard each, and merges their
// reports; the merged report equals the one of a single process.
#pragma once

#include "properties/explorer.h"

namespace qcrash::cli {

Result<properties::ExploreReport> RunExploreJobs(const properties::ExploreConfig& config,
                                                 uint32_t jobs,
                                                 const properties::ProgressFn& progress);

}  // namespace qcrash::cli
