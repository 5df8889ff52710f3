#include "cli/shard_env.h"

#include <cstdlib>

namespace qcrash::cli {
namespace {

// A variable's value as a whole number; nullopt-like false when unset.
// Only digits: "-1", "2x" or "" are a runner misconfiguration, not 0.
Status ReadCount(const char* name, bool& present, unsigned long long& value) {
  const char* text = std::getenv(name);
  present = text != nullptr;
  if (!present) return Status::Ok();
  const std::string s = text;
  bool digits = !s.empty() && s.size() <= 18;
  for (char c : s) digits = digits && c >= '0' && c <= '9';
  if (!digits) {
    return Status::InvalidArgument("bad " + std::string(name) + " '" + s +
                                   "': want a whole number, 0 or more");
  }
  value = std::strtoull(s.c_str(), nullptr, 10);
  return Status::Ok();
}

}  // namespace

Result<std::string> ShardFromEnvironment(std::string* source) {
  bool present = false;
  unsigned long long index = 0, count = 0;
  QCRASH_RETURN_IF_ERROR(ReadCount("JOB_COMPLETION_INDEX", present, index));
  if (present) {
    if (source) *source = "JOB_COMPLETION_INDEX";
    const char* count_name = "QCRASH_SHARD_COUNT";
    QCRASH_RETURN_IF_ERROR(ReadCount(count_name, present, count));
    if (!present) {
      count_name = "JOB_COMPLETIONS";
      QCRASH_RETURN_IF_ERROR(ReadCount(count_name, present, count));
    }
    if (!present) {
      return Status::InvalidArgument(
          "JOB_COMPLETION_INDEX is set but not the shard count: set QCRASH_SHARD_COUNT (or "
          "JOB_COMPLETIONS) to the Job's completions");
    }
    if (count == 0 || index >= count) {
      return Status::InvalidArgument("JOB_COMPLETION_INDEX " + std::to_string(index) +
                                     " is not below " + count_name + " " + std::to_string(count));
    }
    return std::to_string(index) + "/" + std::to_string(count);
  }
  QCRASH_RETURN_IF_ERROR(ReadCount("SLURM_ARRAY_TASK_ID", present, index));
  if (!present) return std::string();
  if (source) *source = "SLURM_ARRAY_TASK_ID";
  QCRASH_RETURN_IF_ERROR(ReadCount("SLURM_ARRAY_TASK_COUNT", present, count));
  if (!present) {
    return Status::InvalidArgument(
        "SLURM_ARRAY_TASK_ID is set but not SLURM_ARRAY_TASK_COUNT (run under sbatch --array)");
  }
  unsigned long long min = 0, step = 1;
  QCRASH_RETURN_IF_ERROR(ReadCount("SLURM_ARRAY_TASK_MIN", present, min));
  QCRASH_RETURN_IF_ERROR(ReadCount("SLURM_ARRAY_TASK_STEP", present, step));
  if (present && step == 0) return Status::InvalidArgument("bad SLURM_ARRAY_TASK_STEP '0'");
  // An array with holes (--array=1,4,7) has no closed form from these: the
  // index would not be below the count, and that is refused.
  if (index < min || (index - min) % step != 0 || count == 0 || (index - min) / step >= count) {
    return Status::InvalidArgument("SLURM_ARRAY_TASK_ID " + std::to_string(index) +
                                   " is not task 0.." + std::to_string(count ? count - 1 : 0) +
                                   " of an array from SLURM_ARRAY_TASK_MIN " + std::to_string(min) +
                                   " by SLURM_ARRAY_TASK_STEP " + std::to_string(step) +
                                   " (a contiguous --array=MIN-MAX[:STEP] is needed)");
  }
  return std::to_string((index - min) / step) + "/" + std::to_string(count);
}

}  // namespace qcrash::cli
