// --shard from the environment of common batch runners, so one command line
// serves every task of a Kubernetes Indexed Job or a Slurm job array.
#pragma once

#include <string>

#include "engine/status.h"

namespace qcrash::cli {

// "i/N" from the environment, or "" when no runner variable is set:
//  - Kubernetes Indexed Jobs set JOB_COMPLETION_INDEX only; the count comes
//    from QCRASH_SHARD_COUNT, else JOB_COMPLETIONS (the manifest sets either);
//  - Slurm job arrays set SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT; an
//    array that does not start at 0 (--array=1-3) or steps (--array=0-8:2)
//    is renumbered from SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_STEP.
// `source` names the variable the index came from (for the messages). Bad or
// missing values are an InvalidArgument naming the variable.
Result<std::string> ShardFromEnvironment(std::string* source);

}  // namespace qcrash::cli
