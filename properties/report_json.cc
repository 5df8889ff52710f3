// The explorer's JSON report.
#include "engine/ordering.h"
#include "properties/json.h"

namespace qcrash::properties {

using nlohmann::json;

json FlushesByRuleToJson(const engine::EngineStats& stats) {
  json out = json::object();
  for (size_t r = 0; r < engine::kRuleCount; ++r) {
    if (stats.flushes_by_rule[r] != 0)
      out[engine::RuleKey(static_cast<engine::Rule>(r))] = stats.flushes_by_rule[r];
  }
  return out;
}

json ReportToJson(const ExploreReport& r) {
  json verdicts = json::object();
  for (int i = 0; i < kVerdictCount; ++i)
    verdicts[VerdictName(static_cast<Verdict>(i))] = r.verdicts[i];
  json violations = json::array();
  for (const FoundViolation& v : r.violations) {
    violations.push_back({{"invariant", v.invariant},
                          {"message", v.message},
                          {"state_id", v.state_id},
                          {"op_class", v.op_class},
                          {"raw_findings", v.raw_findings},
                          {"minimized",
                           {{"ops", v.minimized_workload.ops.size()},
                            {"state_id", v.minimized_state_id},
                            {"message", v.minimized_message},
                            {"raw_findings", v.minimized_raw_findings}}},
                          // Its place in the unsharded enumeration: `report merge`
                          // keeps the first violation of each class across shards.
                          {"state_index", v.state_index}});
  }
  return {{"workload", r.workload_name},
          {"policy", r.policy},
          {"enumerator", r.enumerator},
          {"crash_points", r.crash_points},
          {"states_total", r.states_total},
          {"states_checked", r.states_checked},
          {"states_covered", r.states_checked},
          {"recoveries_run", r.recoveries_run},
          {"skipped_points", r.skipped_points},
          {"budget_exhausted", r.budget_exhausted},
          {"elapsed_seconds", r.elapsed_seconds},
          {"states_per_second", r.states_per_second()},
          {"recoveries_per_second", r.recoveries_per_second()},
          {"verdicts", verdicts},
          {"violations_by_invariant", r.violations_by_invariant},
          {"violating_states", r.violating_states},
          {"violations", violations},
          {"violation_classes_dropped", r.violation_classes_dropped},
          {"guest_writes", r.stats.guest_writes},
          {"guest_flushes", r.stats.guest_flushes},
          {"device_flushes", r.stats.device_flushes},
          {"flushes_by_rule", FlushesByRuleToJson(r.stats)},
          {"transaction_barriers", r.stats.transaction_barriers},
          {"allocating_writes", r.allocating_writes},
          {"flushes_per_guest_write", r.flushes_per_guest_write()},
          {"flushes_per_allocation", r.flushes_per_allocation()},
          {"workload_error", r.workload_error}};
}

}  // namespace qcrash::properties
