// `qcrash explore --device-fault lying-flush|misdirect [--workload W]
// [--policy P] [--report FILE]`: runs each workload under each policy and
// measures what a lying flush or a misdirected write does to the image
// (properties/device_faults.h). A measurement: exit 0 when it ran, whatever
// it found; 2 on bad usage or an I/O error.
#include "cli/explore_device_faults.h"

#include <getopt.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "cli/cli_common.h"
#include "properties/device_faults.h"
#include "properties/json.h"

namespace qcrash::cli {
namespace {

constexpr int kExitUsage = 2;

const char kDeviceFaultUsage[] =
    "usage: qcrash explore --device-fault lying-flush|misdirect [--workload "
    "builtin:NAME|FILE.json]\n"
    "         [--policy P] [--report FILE.json]\n"
    "  lying-flush: a flush acknowledged whose epoch never reaches the media\n"
    "  misdirect: one write lands a cluster away from where it was sent\n"
    "  no --workload: every built-in workload; no --policy: every safe policy\n";

int Usage(const std::string& message) {
  std::fprintf(stderr, "qcrash explore: %s\n%s", message.c_str(), kDeviceFaultUsage);
  return kExitUsage;
}

struct Cell {
  std::string workload;
  properties::Workload load;
  properties::RunOptions run;
};

struct Args {
  std::string fault;
  std::string workload;
  std::string policy;
  std::string report_path;
};

bool NeedsV3(engine::OrderingPolicy p) {
  return p == engine::OrderingPolicy::kLazy || p == engine::OrderingPolicy::kJournal;
}

// The runs to measure, grouped by policy in the order asked.
int Plan(const Args& args, std::vector<engine::OrderingPolicy>& policies,
         std::vector<std::vector<Cell>>& cells) {
  if (args.policy.empty()) {
    policies = {engine::OrderingPolicy::kWritethrough, engine::OrderingPolicy::kOrdered,
                engine::OrderingPolicy::kLazy, engine::OrderingPolicy::kExtent,
                engine::OrderingPolicy::kJournal};
  } else {
    auto policy = engine::ParsePolicy(args.policy);
    if (!policy.ok()) return Usage(policy.status().message());
    policies = {*policy};
  }
  std::vector<std::pair<std::string, properties::Workload>> workloads;
  bool builtin = true;
  if (args.workload.empty()) {
    for (const std::string& name : properties::BuiltinWorkloadNames()) {
      auto w = properties::BuiltinWorkload(name);
      if (!w.ok()) return ReportError(name, w.status()) * kExitUsage;
      workloads.push_back({name, *w});
    }
  } else if (args.workload.rfind("builtin:", 0) == 0) {
    auto w = properties::BuiltinWorkload(args.workload.substr(8));
    if (!w.ok()) return Usage(w.status().message());
    workloads.push_back({args.workload.substr(8), *w});
  } else {
    builtin = false;
    auto w = properties::LoadWorkloadFile(args.workload);
    if (!w.ok()) return ReportError(args.workload, w.status()) * kExitUsage;
    workloads.push_back({args.workload, *w});
  }
  for (const engine::OrderingPolicy p : policies) {
    std::vector<Cell>& row = cells.emplace_back();
    for (const auto& [name, w] : workloads) {
      if (w.image.version < 3 && NeedsV3(p)) continue;  // as the suite does
      // The device fault models act on the image file alone: the built-ins
      // with an external data file or a commit (a second device) are left
      // out of the table (asked for by name, they are refused with the reason).
      if (args.workload.empty() && (!w.image.data_file.empty() || properties::RecordsBacking(w)))
        continue;
      // As the suite: writethrough's 5,000 flushed metadata writes of
      // refcount-table-growth only when the policy was asked for.
      if (args.workload.empty() && args.policy.empty() && name == "refcount-table-growth" &&
          p == engine::OrderingPolicy::kWritethrough) {
        continue;
      }
      Cell cell{name, w, {}};
      cell.run.open.policy = p;
      if (builtin) cell.run.open.l2_cache_tables = 2;  // the suite's cache: evictions
      row.push_back(std::move(cell));
    }
  }
  size_t runs = 0;
  for (const auto& row : cells) runs += row.size();
  if (runs == 0) return Usage("no run: a v2 workload cannot use the lazy or journal policy");
  return 0;
}

std::string InvariantList(const std::map<std::string, uint64_t>& invariants) {
  std::string out;
  for (const auto& [name, count] : invariants) {
    out += (out.empty() ? "" : ", ") + name + " " + std::to_string(count);
  }
  return out.empty() ? "none" : out;
}

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int RunLyingFlush(const Args& args, const std::vector<engine::OrderingPolicy>& policies,
                  const std::vector<std::vector<Cell>>& cells) {
  const auto start = std::chrono::steady_clock::now();
  nlohmann::json json = {{"device_fault", "lying-flush"}, {"policies", nlohmann::json::array()}};
  struct Row {
    uint64_t states = 0, violating = 0, runs = 0;
    std::map<std::string, uint64_t> invariants;
  };
  std::vector<Row> rows;
  for (size_t pi = 0; pi < policies.size(); ++pi) {
    Row& row = rows.emplace_back();
    nlohmann::json workloads = nlohmann::json::array();
    for (const Cell& cell : cells[pi]) {
      auto run = properties::RunWorkload(cell.load, cell.run);
      if (!run.ok()) return ReportError(cell.workload, run.status()) * kExitUsage;
      auto measured = properties::MeasureLyingFlush(*run);
      if (!measured.ok()) return ReportError(cell.workload, measured.status()) * kExitUsage;
      ++row.runs;
      row.states += measured->states;
      row.violating += measured->violating_states;
      for (const auto& [name, count] : measured->invariants) row.invariants[name] += count;
      nlohmann::json examples = nlohmann::json::array();
      for (const properties::LyingFlushExample& e : measured->examples) {
        examples.push_back({{"flush_record", e.flush_record},
                            {"crash_point", e.crash_point},
                            {"guest_flush", e.guest_flush},
                            {"dropped_sectors", e.dropped_sectors},
                            {"state_id", e.state_id},
                            {"invariant", e.invariant},
                            {"message", e.message}});
      }
      workloads.push_back({{"workload", cell.workload},
                           {"log_records", run->log->size()},
                           {"flushes", measured->flushes},
                           {"empty_epochs", measured->empty_epochs},
                           {"states", measured->states},
                           {"violating_states", measured->violating_states},
                           {"invariants", measured->invariants},
                           {"examples", examples}});
    }
    json["policies"].push_back({{"policy", engine::PolicyName(policies[pi])},
                                {"runs", row.runs},
                                {"states", row.states},
                                {"violating_states", row.violating},
                                {"invariants", row.invariants},
                                {"survives", row.violating == 0},
                                {"workloads", workloads}});
  }
  size_t runs = 0;
  for (const auto& row : cells) runs += row.size();
  std::printf("qcrash explore: device fault lying-flush, %zu runs (workload x policy), %.1f s\n",
              runs, Since(start));
  std::printf("  %-14s %5s %8s %10s  %-28s %s\n", "policy", "runs", "states", "violating",
              "invariants broken (states)", "survives");
  for (size_t pi = 0; pi < policies.size(); ++pi) {
    const Row& row = rows[pi];
    std::printf("  %-14s %5llu %8llu %10llu  %-28s %s\n", engine::PolicyName(policies[pi]),
                static_cast<unsigned long long>(row.runs),
                static_cast<unsigned long long>(row.states),
                static_cast<unsigned long long>(row.violating),
                InvariantList(row.invariants).c_str(), row.violating == 0 ? "yes" : "no");
  }
  if (!WriteReport(args.report_path, json)) {
    return ReportError(args.report_path, Status::IoError("cannot write report")) * kExitUsage;
  }
  return 0;
}

nlohmann::json ZonesToJson(const std::array<properties::ZoneCounts, properties::kZoneCount>& z) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < properties::kZoneCount; ++i) {
    out.push_back({{"zone", properties::ZoneName(static_cast<properties::Zone>(i))},
                   {"writes", z[i].writes},
                   {"misdirected", z[i].misdirected},
                   {"detected", z[i].detected},
                   {"silent", z[i].silent},
                   {"silent_wrong_data", z[i].silent_wrong_data}});
  }
  return out;
}

int RunMisdirect(const Args& args, const std::vector<engine::OrderingPolicy>& policies,
                 const std::vector<std::vector<Cell>>& cells) {
  const auto start = std::chrono::steady_clock::now();
  nlohmann::json json = {{"device_fault", "misdirect"}, {"policies", nlohmann::json::array()}};
  std::vector<std::array<properties::ZoneCounts, properties::kZoneCount>> totals;
  for (size_t pi = 0; pi < policies.size(); ++pi) {
    auto& total = totals.emplace_back();
    nlohmann::json workloads = nlohmann::json::array();
    for (const Cell& cell : cells[pi]) {
      auto run = properties::RunWorkload(cell.load, cell.run);
      if (!run.ok()) return ReportError(cell.workload, run.status()) * kExitUsage;
      auto measured = properties::MeasureMisdirect(*run);
      if (!measured.ok()) return ReportError(cell.workload, measured.status()) * kExitUsage;
      for (size_t z = 0; z < properties::kZoneCount; ++z) {
        const properties::ZoneCounts& c = measured->zones[z];
        total[z].writes += c.writes;
        total[z].misdirected += c.misdirected;
        total[z].detected += c.detected;
        total[z].silent += c.silent;
        total[z].silent_wrong_data += c.silent_wrong_data;
      }
      nlohmann::json silent = nlohmann::json::array();
      for (const properties::MisdirectCase& c : measured->cases) {
        if (c.detected || silent.size() >= 8) continue;
        silent.push_back({{"record", c.record},
                          {"zone", properties::ZoneName(c.zone)},
                          {"offset", c.offset_bytes},
                          {"landed", c.landed_bytes},
                          {"wrong_guest_data", c.wrong_data},
                          {"note", c.how}});
      }
      workloads.push_back({{"workload", cell.workload},
                           {"write_records", measured->write_records},
                           {"misdirected", measured->misdirected},
                           {"baseline_leaks", measured->baseline_leaks},
                           {"baseline_corruptions", measured->baseline_corruptions},
                           {"zones", ZonesToJson(measured->zones)},
                           {"silent_examples", silent}});
    }
    json["policies"].push_back({{"policy", engine::PolicyName(policies[pi])},
                                {"runs", cells[pi].size()},
                                {"zones", ZonesToJson(total)},
                                {"workloads", workloads}});
  }
  size_t runs = 0;
  for (const auto& row : cells) runs += row.size();
  std::printf("qcrash explore: device fault misdirect, %zu runs (workload x policy), %.1f s\n",
              runs, Since(start));
  for (size_t pi = 0; pi < policies.size(); ++pi) {
    std::printf("  policy %s (%zu runs)\n", engine::PolicyName(policies[pi]), cells[pi].size());
    std::printf("    %-15s %7s %11s %9s %7s %18s\n", "zone", "writes", "misdirected", "detected",
                "silent", "silent+wrong data");
    for (size_t z = 0; z < properties::kZoneCount; ++z) {
      const properties::ZoneCounts& c = totals[pi][z];
      if (c.writes == 0) continue;
      std::printf(
          "    %-15s %7llu %11llu %9llu %7llu %18llu\n",
          properties::ZoneName(static_cast<properties::Zone>(z)),
          static_cast<unsigned long long>(c.writes), static_cast<unsigned long long>(c.misdirected),
          static_cast<unsigned long long>(c.detected), static_cast<unsigned long long>(c.silent),
          static_cast<unsigned long long>(c.silent_wrong_data));
    }
  }
  if (!WriteReport(args.report_path, json)) {
    return ReportError(args.report_path, Status::IoError("cannot write report")) * kExitUsage;
  }
  return 0;
}

}  // namespace

int RunDeviceFaultIfAsked(int argc, char** argv) {
  bool asked = false;
  for (int i = 1; i < argc; ++i) {
    asked |= std::strcmp(argv[i], "--device-fault") == 0 ||
             std::strncmp(argv[i], "--device-fault=", 15) == 0;
  }
  if (!asked) return -1;
  static const option kOptions[] = {{"device-fault", required_argument, nullptr, 'D'},
                                    {"workload", required_argument, nullptr, 'w'},
                                    {"policy", required_argument, nullptr, 'p'},
                                    {"report", required_argument, nullptr, 'r'},
                                    {"help", no_argument, nullptr, 'h'},
                                    {nullptr, 0, nullptr, 0}};
  Args args;
  ResetGetopt();
  int c;
  while ((c = getopt_long(argc, argv, "h", kOptions, nullptr)) != -1) {
    const std::string value = optarg ? optarg : "";
    switch (c) {
      case 'D':
        args.fault = value;
        break;
      case 'w':
        args.workload = value;
        break;
      case 'p':
        args.policy = value;
        break;
      case 'r':
        args.report_path = value;
        break;
      case 'h':
        std::printf("%s", kDeviceFaultUsage);
        return 0;
      default:
        return Usage("an option --device-fault does not take");
    }
  }
  if (optind != argc) return Usage(std::string("unexpected argument '") + argv[optind] + "'");
  if (args.fault != "lying-flush" && args.fault != "misdirect") {
    return Usage("unknown device fault '" + args.fault + "' (lying-flush or misdirect)");
  }
  std::vector<engine::OrderingPolicy> policies;
  std::vector<std::vector<Cell>> cells;
  if (int rc = Plan(args, policies, cells); rc != 0) return rc;
  return args.fault == "lying-flush" ? RunLyingFlush(args, policies, cells)
                                     : RunMisdirect(args, policies, cells);
}

bool WriteReport(const std::string& path, const nlohmann::json& json) {
  if (path.empty()) return true;
  std::ofstream out(path, std::ios::trunc);
  out << DumpJson(json, 2) << "\n";
  out.close();
  if (!out) return false;
  std::printf("  report          %s\n", path.c_str());
  return true;
}

}  // namespace qcrash::cli
