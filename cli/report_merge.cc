#include "cli/report_merge.h"

#include <getopt.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "cli/cli_common.h"
#include "cli/junit.h"
#include "properties/report_page.h"

namespace qcrash::cli {
namespace {

using nlohmann::json;

constexpr int kExitUsage = 2;

const char kUsage[] =
    "usage: qcrash report merge SHARD.json... -o MERGED.json [--junit FILE.xml]\n"
    "  adds up the reports of the shards of one `qcrash explore --workload` run (--shard i/N,\n"
    "  or JOB_COMPLETION_INDEX / SLURM_ARRAY_TASK_ID): all N shards, each once; the result is\n"
    "  the report the unsharded run writes (elapsed: the slowest shard)\n";

// Fields that identify the run: every shard must agree on them.
constexpr const char* kSameRun[] = {"workload",  "policy", "seed",         "sector_bytes",
                                    "bugs",      "engine", "qemu_version", "qemu_cache",
                                    "qemu_opts", "log",    "base",         "violations_kept"};
// Per-state counts: the unsharded run's is the sum of the shards'. The last
// two are issue 18's deduplication counters, summed when a report has them.
constexpr const char* kSummed[] = {"states_total",
                                   "states_checked",
                                   "skipped_points",
                                   "violating_states",
                                   "violation_classes_dropped",
                                   "states_covered",
                                   "recoveries_run"};

// "prefix@1/3" -> "prefix", 1, 3; an unsharded enumerator is shard 0 of 1.
void SplitShard(const std::string& enumerator, std::string& base, uint64_t& index,
                uint64_t& count) {
  base = enumerator;
  index = 0;
  count = 1;
  const size_t at = enumerator.find('@');
  if (at == std::string::npos) return;
  size_t end = at + 1;
  while (end < enumerator.size() &&
         (std::isdigit(static_cast<unsigned char>(enumerator[end])) || enumerator[end] == '/'))
    ++end;
  const std::string shard = enumerator.substr(at + 1, end - at - 1);
  const size_t slash = shard.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == shard.size()) return;
  index = std::stoull(shard.substr(0, slash));
  count = std::stoull(shard.substr(slash + 1));
  base = enumerator.substr(0, at) + enumerator.substr(end);
}

std::string Shown(const json& value) { return value.is_null() ? "none" : value.dump(); }

}  // namespace

Result<json> MergeExploreReports(const std::vector<std::string>& names,
                                 const std::vector<json>& reports) {
  if (reports.empty()) return Status::InvalidArgument("no report to merge");
  std::string base;
  uint64_t count = 0;
  std::map<uint64_t, std::string> seen;  // shard index -> file
  for (size_t i = 0; i < reports.size(); ++i) {
    const json& r = reports[i];
    if (!r.is_object() || !r.contains("enumerator") || !r.contains("states_checked")) {
      if (r.is_object() && r.value("suite", false)) {
        return Status::InvalidArgument(
            names[i] + ": a suite report (explore without --workload): the suite is not sharded");
      }
      return Status::InvalidArgument(names[i] + ": not a qcrash explore report");
    }
    for (const char* key : kSameRun) {
      const json a = reports[0].contains(key) ? reports[0][key] : json();
      const json b = r.contains(key) ? r[key] : json();
      if (a != b) {
        return Status::InvalidArgument(names[i] + ": " + key + " " + Shown(b) + " differs from " +
                                       names[0] + "'s " + Shown(a) + ": not shards of one run");
      }
    }
    std::string shard_base;
    uint64_t index = 0, shard_count = 0;
    SplitShard(r["enumerator"].get<std::string>(), shard_base, index, shard_count);
    if (i == 0) {
      base = shard_base;
      count = shard_count;
    }
    if (shard_base != base) {
      return Status::InvalidArgument(names[i] + ": enumerator " + shard_base + " differs from " +
                                     names[0] + "'s " + base + ": not shards of one run");
    }
    if (shard_count != count) {
      return Status::InvalidArgument(names[i] + ": shard " + std::to_string(index) + "/" +
                                     std::to_string(shard_count) + " is not one of " +
                                     std::to_string(count) + " as " + names[0] + "'s");
    }
    if (!seen.emplace(index, names[i]).second) {
      return Status::InvalidArgument(names[i] + ": shard " + std::to_string(index) + "/" +
                                     std::to_string(count) + " again (also " + seen[index] + ")");
    }
  }
  for (uint64_t k = 0; k < count; ++k) {
    if (!seen.count(k)) {
      return Status::InvalidArgument("shard " + std::to_string(k) + "/" + std::to_string(count) +
                                     " is missing: " + std::to_string(reports.size()) + " of " +
                                     std::to_string(count) + " shards given");
    }
  }
  // The workload-level fields (crash points, flush counts, the workload's
  // error) are the same in every shard: the first report's stand.
  json merged = reports[0];
  merged["enumerator"] = base;
  for (const char* key : kSummed) {
    if (!merged.contains(key)) continue;
    uint64_t sum = 0;
    for (const json& r : reports) sum += r.value(key, uint64_t{0});
    merged[key] = sum;
  }
  double elapsed = 0;
  bool exhausted = false;
  json verdicts = json::object(), by_invariant = json::object();
  std::vector<json> violations;
  for (const json& r : reports) {
    elapsed = std::max(elapsed, r.value("elapsed_seconds", 0.0));
    exhausted = exhausted || r.value("budget_exhausted", false);
    for (const auto& [name, n] : r["verdicts"].items())
      verdicts[name] = verdicts.value(name, uint64_t{0}) + n.get<uint64_t>();
    for (const auto& [name, n] : r["violations_by_invariant"].items())
      by_invariant[name] = by_invariant.value(name, uint64_t{0}) + n.get<uint64_t>();
    for (const json& v : r["violations"]) violations.push_back(v);
  }
  // The page's crash points: summed per point, then aggregated again as
  // the unsharded run aggregates them; dropped when a shard has no tallies.
  if (merged.contains("points")) {
    const uint64_t points = merged["points"].value("count", uint64_t{0});
    std::vector<properties::PointTally> tallies(points);
    bool exact = true;
    for (const json& r : reports) {
      if (!r.contains("points") || !r["points"].contains("tallies")) {
        exact = false;
        break;
      }
      for (const json& row : r["points"]["tallies"]) {
        const uint64_t p = row[0].get<uint64_t>();
        if (p >= points || row.size() != tallies[0].size() + 1) {
          exact = false;
          break;
        }
        for (size_t i = 0; i < tallies[p].size(); ++i) tallies[p][i] += row[i + 1].get<uint64_t>();
      }
    }
    if (exact) {
      merged["points"] = properties::PointsJsonOf(points, tallies);
    } else {
      merged.erase("points");
    }
  }
  merged["elapsed_seconds"] = elapsed;
  merged["budget_exhausted"] = exhausted;
  merged["states_per_second"] =
      elapsed > 0 ? merged["states_checked"].get<uint64_t>() / elapsed : 0.0;
  if (merged.contains("recoveries_run"))
    merged["recoveries_per_second"] =
        elapsed > 0 ? merged["recoveries_run"].get<uint64_t>() / elapsed : 0.0;
  merged["verdicts"] = verdicts;
  merged["violations_by_invariant"] = by_invariant;
  // As RunExploreJobs: the first state of each invariant x operation class
  // in the unsharded order (each shard kept its own first), up to the cap.
  std::stable_sort(violations.begin(), violations.end(), [](const json& a, const json& b) {
    return a.value("state_index", uint64_t{0}) < b.value("state_index", uint64_t{0});
  });
  const uint64_t cap = merged.value("violations_kept", uint64_t{violations.size()});
  std::set<std::string> classes;
  json kept = json::array();
  uint64_t dropped = merged.value("violation_classes_dropped", uint64_t{0});
  for (const json& v : violations) {
    if (!classes.insert(v.value("invariant", "") + "/" + v.value("op_class", "")).second) continue;
    if (kept.size() >= cap) {
      ++dropped;
      continue;
    }
    kept.push_back(v);
  }
  merged["violations"] = kept;
  merged["violation_classes_dropped"] = dropped;
  merged["merged_shards"] = count;
  return merged;
}

int RunReportMerge(int argc, char** argv) {
  static const option kOptions[] = {{"output", required_argument, nullptr, 'o'},
                                    {"junit", required_argument, nullptr, 'j'},
                                    {"help", no_argument, nullptr, 'h'},
                                    {nullptr, 0, nullptr, 0}};
  std::string output, junit;
  ResetGetopt();
  int c;
  while ((c = getopt_long(argc, argv, "o:h", kOptions, nullptr)) != -1) {
    switch (c) {
      case 'o':
        output = optarg;
        break;
      case 'j':
        junit = optarg;
        break;
      case 'h':
        std::printf("%s", kUsage);
        return 0;
      default:
        std::fprintf(stderr, "%s", kUsage);
        return kExitUsage;
    }
  }
  if (output.empty() || optind >= argc) {
    std::fprintf(stderr, "qcrash report merge: %s\n%s",
                 output.empty() ? "-o MERGED.json is needed" : "no report to merge", kUsage);
    return kExitUsage;
  }
  std::vector<std::string> names(argv + optind, argv + argc);
  std::vector<json> reports;
  for (const std::string& name : names) {
    std::ifstream in(name, std::ios::binary);
    if (!in) return ReportError(name, Status::IoError("cannot read the report")) * kExitUsage;
    std::stringstream text;
    text << in.rdbuf();
    json report = json::parse(text.str(), nullptr, false);
    if (report.is_discarded())
      return ReportError(name, Status::InvalidArgument("not valid JSON")) * kExitUsage;
    reports.push_back(std::move(report));
  }
  auto merged = MergeExploreReports(names, reports);
  if (!merged.ok()) {
    std::fprintf(stderr, "qcrash report merge: %s\n", merged.status().message().c_str());
    return kExitUsage;
  }
  std::ofstream out(output, std::ios::trunc);
  out << DumpJson(*merged, 2) << "\n";
  out.close();
  if (!out) return ReportError(output, Status::IoError("cannot write the report")) * kExitUsage;
  if (!junit.empty()) {
    if (Status written =
            WriteJunit(junit, "qcrash report merge", {JunitCaseFromReport(*merged, output)});
        !written.ok())
      return ReportError(junit, written) * kExitUsage;
  }
  const json& m = *merged;
  std::printf(
      "qcrash report merge: %zu shards of %s, policy %s, enumerator %s: %llu of %llu states "
      "checked, %llu violating -> %s\n",
      names.size(), m.value("workload", "").c_str(), m.value("policy", "").c_str(),
      m.value("enumerator", "").c_str(),
      static_cast<unsigned long long>(m.value("states_checked", uint64_t{0})),
      static_cast<unsigned long long>(m.value("states_total", uint64_t{0})),
      static_cast<unsigned long long>(m.value("violating_states", uint64_t{0})), output.c_str());
  return m.value("violating_states", uint64_t{0}) > 0 || !m.value("workload_error", "").empty() ? 1
                                                                                                : 0;
}

}  // namespace qcrash::cli
