// RunExploreJobs: worker j of N explores shard (i + S*j) of S*N, where i/S is
// the user's --shard; each worker's report travels back as JSON through
// sim::RunForkedWorkers (shared memory) and the parent merges them.
#include "cli/explore_jobs.h"

#include <nlohmann/json.hpp>
#include <set>

#include "cli/cli_common.h"
#include "sim/isolation.h"

namespace qcrash::cli {
namespace {

using nlohmann::json;

std::string Encode(const Result<properties::ExploreReport>& result) {
  if (!result.ok()) return DumpJson(json{{"error", result.status().ToString()}});
  const properties::ExploreReport& r = *result;
  json violations = json::array();
  for (const properties::FoundViolation& v : r.violations) {
    violations.push_back({{"invariant", v.invariant},
                          {"message", v.message},
                          {"state_id", v.state_id},
                          {"state_index", v.state_index},
                          {"op_class", v.op_class},
                          {"raw_findings", v.raw_findings}});
  }
  json points = json::array();  // sparse: [point, count by verdict..., violating]
  for (size_t p = 0; p < r.point_verdicts.size(); ++p) {
    json row = json::array({p});
    uint64_t sum = 0;
    for (uint64_t c : r.point_verdicts[p]) {
      row.push_back(c);
      sum += c;
    }
    if (sum != 0) points.push_back(std::move(row));
  }
  return DumpJson(json{{"states_total", r.states_total},
                       {"states_checked", r.states_checked},
                       {"recoveries_run", r.recoveries_run},
                       {"skipped_points", r.skipped_points},
                       {"elapsed", r.elapsed_seconds},
                       {"budget_exhausted", r.budget_exhausted},
                       {"verdicts", r.verdicts},
                       {"by_invariant", r.violations_by_invariant},
                       {"violating_states", r.violating_states},
                       {"classes_dropped", r.violation_classes_dropped},
                       {"violations", violations},
                       {"points", points}});
}

Status Decode(const std::string& text, const properties::Workload& workload,
              properties::ExploreReport& r) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return Status::IoError("a worker's report is not valid JSON");
  if (j.contains("error")) return Status::IoError("worker: " + j["error"].get<std::string>());
  r.states_total = j["states_total"];
  r.states_checked = j["states_checked"];
  r.recoveries_run = j["recoveries_run"];
  r.skipped_points = j["skipped_points"];
  r.elapsed_seconds = j["elapsed"];
  r.budget_exhausted = j["budget_exhausted"];
  r.verdicts = j["verdicts"].get<std::array<uint64_t, properties::kVerdictCount>>();
  r.violations_by_invariant = j["by_invariant"].get<std::map<std::string, uint64_t>>();
  r.violating_states = j["violating_states"];
  r.violation_classes_dropped = j["classes_dropped"];
  for (const json& row : j["points"]) {
    const uint64_t p = row[0];
    if (p >= r.point_verdicts.size()) r.point_verdicts.resize(p + 1);
    for (size_t i = 0; i < r.point_verdicts[p].size(); ++i) r.point_verdicts[p][i] = row[i + 1];
  }
  for (const json& v : j["violations"]) {
    properties::FoundViolation found;
    found.invariant = v["invariant"];
    found.message = v["message"];
    found.state_id = v["state_id"];
    found.state_index = v["state_index"];
    found.op_class = v["op_class"];
    found.raw_findings = v["raw_findings"].get<std::vector<std::string>>();
    found.minimized_raw_findings = found.raw_findings;
    found.minimized_workload = workload;
    found.minimized_state_id = found.state_id;
    found.minimized_message = found.message;
    r.violations.push_back(std::move(found));
  }
  return Status::Ok();
}

}  // namespace

Result<properties::ExploreReport> RunExploreJobs(const properties::ExploreConfig& config,
                                                 uint32_t jobs,
                                                 const properties::ProgressFn& progress) {
  if (jobs <= 1) return properties::Explore(config, progress);
  const uint64_t user_index = config.enumerator.shard_index,
                 user_count = config.enumerator.shard_count;
  auto results = sim::RunForkedWorkers(jobs, [&](uint32_t worker) {
    properties::ExploreConfig part = config;
    part.enumerator.shard_index = user_index + user_count * worker;
    part.enumerator.shard_count = user_count * jobs;
    return Encode(properties::Explore(part, nullptr));
  });
  if (!results.ok()) return results.status();
  // The workload-level fields come from one in-process run (they are the
  // same in every worker); the state counts from the workers.
  properties::ExploreConfig none = config;
  none.states_max = 1;
  none.budget_seconds = 0;
  QCRASH_ASSIGN_OR_RETURN(properties::ExploreReport merged, properties::Explore(none, nullptr));
  merged.states_total = merged.states_checked = merged.skipped_points = merged.violating_states = 0;
  merged.elapsed_seconds = 0;
  merged.budget_exhausted = false;
  merged.verdicts = {};
  merged.violations_by_invariant.clear();
  merged.violations.clear();
  merged.point_verdicts.clear();
  for (const std::string& text : *results) {
    properties::ExploreReport part;
    QCRASH_RETURN_IF_ERROR(Decode(text, config.workload, part));
    merged.Merge(part);
  }
  // Merge sorted them by state index: keep the first state of each class
  // (workers found their classes apart), up to the cap.
  std::set<std::string> classes;
  std::vector<properties::FoundViolation> kept;
  for (properties::FoundViolation& v : merged.violations) {
    if (!classes.insert(v.invariant + "/" + v.op_class).second) continue;
    if (kept.size() >= config.violations_kept) {
      ++merged.violation_classes_dropped;
      continue;
    }
    kept.push_back(std::move(v));
  }
  merged.violations = std::move(kept);
  return merged;
}

}  // namespace qcrash::cli
