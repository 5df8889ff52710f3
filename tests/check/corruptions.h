// The corruption classes live in properties/corruptions.h (the suite's
// corrupt-start pass uses them too); the check tests name them here.
#pragma once

#include "properties/corruptions.h"
#include "tests/check/check_test_util.h"

namespace qcrash::check_test {

using properties::Applied;
using properties::ApplyCorruption;
using properties::Corruption;
using properties::CorruptionName;
using properties::kCorruptionCount;

}  // namespace qcrash::check_test
