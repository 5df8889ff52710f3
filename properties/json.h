// JSON forms of workloads (the documented workload file format) and of the
// explorer's report. nlohmann/json stays in this file pair and in cli/.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "properties/explorer.h"
#include "properties/workload.h"

namespace qcrash::properties {

// Workload file format (every field, default and limit: docs/workload-format.md):
// {"name": "...", "image": {"size": 8388608, "cluster_size": 4096, "compat": "1.1",
//  "refcount_bits": 16, "preallocation": "off", "lazy_refcounts": false},
//  "check_reservations": false,
//  "ops": [{"op": "write", "offset": 0, "length": 4096},
//          {"op": "write-zeroes", "offset": 0, "length": 4096, "unmap": true},
//          {"op": "discard", "offset": 0, "length": 4096}, {"op": "flush"},
//          {"op": "resize", "size": 16777216}, {"op": "close"}]}
nlohmann::json WorkloadToJson(const Workload& workload);
Result<Workload> WorkloadFromJson(const nlohmann::json& json);
Result<Workload> LoadWorkloadFile(const std::string& path);

nlohmann::json ReportToJson(const ExploreReport& report);

// {"guest_flush": 3, "relocate_then_switch": 2, ...}: the device flushes
// each ordering rule asked for (rules that asked for none are left out).
nlohmann::json FlushesByRuleToJson(const engine::EngineStats& stats);

}  // namespace qcrash::properties
