// The QEMU engine's explore modes and the qemu-img check differential.
#include "cli/explore_qemu.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli/cli_common.h"
#include "cli/explore_device_faults.h"
#include "cli/reproducer.h"
#include "properties/generate.h"
#include "properties/json.h"
#include "sim/crash_view.h"

namespace qcrash::cli {
namespace {

namespace fs = std::filesystem;

nlohmann::json CheckToJson(const properties::QemuCheck& c) {
  return {{"exit_code", c.exit_code},
          {"corruptions", c.corruptions},
          {"leaks", c.leaks},
          {"check_errors", c.check_errors}};
}

std::string DescribeCheck(const properties::QemuCheck& c) {
  return std::to_string(c.corruptions) + " corruptions, " + std::to_string(c.leaks) + " leaks, " +
         std::to_string(c.check_errors) + " check errors (exit " + std::to_string(c.exit_code) +
         ")";
}

}  // namespace

Status WriteStateImage(const properties::WorkloadRun& run, const std::string& state_id,
                       const std::string& path) {
  QCRASH_ASSIGN_OR_RETURN(sim::CrashState state, sim::ParseCrashStateId(state_id));
  if (state.point >= run.timeline->PointCount())
    return Status::InvalidArgument("state " + state_id + ": point out of range");
  QCRASH_ASSIGN_OR_RETURN(auto view, run.timeline->BuildView(state));
  std::vector<uint8_t> bytes(view->SizeBytes());
  QCRASH_RETURN_IF_ERROR(view->Read(0, bytes));
  std::error_code error;
  fs::create_directories(fs::path(path).parent_path(), error);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (run.workload.backing) {
    const std::vector<uint8_t> backing = properties::BackingFileBytes(run.workload);
    std::ofstream b((fs::path(path).parent_path() / properties::kBackingFileName).string(),
                    std::ios::binary | std::ios::trunc);
    b.write(reinterpret_cast<const char*>(backing.data()),
            static_cast<std::streamsize>(backing.size()));
  }
  return out ? Status::Ok() : Status::IoError(path + ": cannot write");
}

std::vector<std::string> QemuCheckViolations(const std::string& qemu_img,
                                             nlohmann::json& violations) {
  std::vector<std::string> lines;
  if (!violations.is_array()) return lines;
  for (nlohmann::json& v : violations) {
    if (!v.contains("reproducer")) {
      lines.emplace_back("");
      continue;
    }
    const std::string image = v["reproducer"].get<std::string>() + "/image.qcow2";
    auto check = properties::QemuImgCheck(qemu_img, image);
    if (!check.ok()) {
      v["qemu_img_check"] = {{"error", check.status().ToString()}};
      lines.push_back("qemu-img check: " + check.status().ToString());
      continue;
    }
    v["qemu_img_check"] = CheckToJson(*check);
    lines.push_back("qemu-img check: " + DescribeCheck(*check));
  }
  return lines;
}

Result<nlohmann::json> QemuCheckSample(const properties::ExploreConfig& config,
                                       const properties::WorkloadRun& run, uint64_t count,
                                       const std::string& qemu_img) {
  sim::EnumeratorSpec spec = properties::ResolveEnumerator(config.enumerator, run);
  const uint64_t total = sim::CountCrashStates(*run.timeline, spec);
  if (count == 0 || total == 0) return nlohmann::json::object();
  spec.shard_count = std::max<uint64_t>(1, total / count);
  spec.shard_index = 0;
  const properties::GuestOracle oracle(run);
  auto enumerator = sim::CrashEnumerator::Create(*run.timeline, spec);
  char dir_template[] = "/tmp/qcrash-sample-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return Status::IoError("cannot make a scratch directory");
  const std::string dir = dir_template;
  uint64_t checked = 0, qemu_corrupt = 0, ours_corrupt = 0, qemu_leaks = 0, disagree = 0;
  nlohmann::json disagreements = nlohmann::json::array();
  sim::CrashState state;
  Status failed = Status::Ok();
  while (checked < count && enumerator->Next(&state)) {
    const std::string id = sim::FormatCrashStateId(state);
    properties::StateResult ours =
        properties::RecoverState(run, oracle, enumerator->point(), state, config.recovery);
    const std::string image = dir + "/image.qcow2";
    if (Status written = WriteStateImage(run, id, image); !written.ok()) {
      failed = written;
      break;
    }
    auto theirs = properties::QemuImgCheck(qemu_img, image);
    if (!theirs.ok()) {
      failed = theirs.status();
      break;
    }
    ++checked;
    // A dirty image (lazy refcounts) is repaired by any read-write open:
    // its refcounts are not held to account, by QEMU or by us.
    const bool ours_bad = ours.raw_corruptions > 0 && !ours.raw_refcounts_dirty;
    const bool theirs_bad = theirs->corruptions > 0 || theirs->check_errors > 0;
    qemu_corrupt += theirs_bad;
    ours_corrupt += ours_bad;
    qemu_leaks += theirs->leaks > 0;
    if (ours_bad != theirs_bad) {
      ++disagree;
      if (disagreements.size() < 8) {
        disagreements.push_back({{"state_id", id},
                                 {"qcrash_corruptions", ours.raw_corruptions},
                                 {"qemu_img_check", CheckToJson(*theirs)}});
      }
    }
  }
  std::error_code ignored;
  fs::remove_all(dir, ignored);
  QCRASH_RETURN_IF_ERROR(failed);
  return nlohmann::json{
      {"states", checked},        {"qemu_corrupt", qemu_corrupt}, {"qcrash_corrupt", ours_corrupt},
      {"qemu_leaks", qemu_leaks}, {"disagree", disagree},         {"disagreements", disagreements}};
}

int RunQemuSuite(const QemuSuiteArgs& args) {
  const auto start = std::chrono::steady_clock::now();
  auto version = properties::QemuVersion(args.qemu.qemu_io);
  if (!version.ok()) return ReportError(args.qemu.qemu_io, version.status()) * 2;
  std::vector<properties::Workload> workloads;
  for (const std::string& name : properties::BuiltinWorkloadNames()) {
    if (args.quick && name == "refcount-table-growth") continue;
    auto w = properties::BuiltinWorkload(name);
    if (w.ok()) workloads.push_back(*w);
  }
  const size_t builtins = workloads.size();
  for (uint64_t k = 0; k < args.generated; ++k) {
    workloads.push_back(
        properties::GenerateCase(args.seed + k, 0, engine::OrderingPolicy::kOrdered).workload);
  }
  properties::RunOptions run_options = args.run;
  run_options.qemu = std::make_shared<properties::QemuEngineOptions>(args.qemu);
  const std::string policy = "qemu/" + args.qemu.cache;
  std::printf("qcrash explore: QEMU %s, cache=%s%s%s\n", version->c_str(), args.qemu.cache.c_str(),
              args.qemu.runtime_opts.empty() ? "" : ", ", args.qemu.runtime_opts.c_str());
  std::printf("  %-22s %-10s %8s %9s  %s\n", "workload", "enumerator", "states", "failing",
              "clean/leaks/repaired/stale/loss/unrecoverable");
  nlohmann::json json = {{"suite", true},
                         {"engine", "qemu"},
                         {"qemu_version", *version},
                         {"qemu_cache", args.qemu.cache},
                         {"qemu_opts", args.qemu.runtime_opts},
                         {"cells", nlohmann::json::array()},
                         {"failures", nlohmann::json::array()},
                         {"skipped", nlohmann::json::array()}};
  std::string base = args.reproducers_dir;
  if (base.empty())
    base = args.report_path.empty() ? "qcrash-reproducers" : args.report_path + ".reproducers";
  uint64_t states = 0, failing_cells = 0, cells = 0;
  double run_seconds = 0, recover_seconds = 0;
  for (size_t w = 0; w < workloads.size(); ++w) {
    const properties::Workload& workload = workloads[w];
    const auto run_start = std::chrono::steady_clock::now();
    auto run = properties::RunWorkload(workload, run_options);
    run_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
    if (!run.ok() && run.status().code() == StatusCode::kInvalidArgument) {
      // QEMU refuses this configuration (lazy refcounts on a v2 image, say).
      std::printf("  %-22s skipped: %s\n", workload.name.c_str(), run.status().message().c_str());
      json["skipped"].push_back({{"workload", workload.name}, {"reason", run.status().message()}});
      continue;
    }
    if (!run.ok()) return ReportError(workload.name, run.status()) * 2;
    auto prepared = std::make_shared<const properties::WorkloadRun>(std::move(run).value());
    for (const char* enumerator : {"prefix", "drop-one", "tear-one", "epochs"}) {
      properties::ExploreConfig config;
      config.workload = workload;
      config.run = run_options;
      config.prepared = prepared;
      config.enumerator = *sim::ParseEnumeratorSpec(enumerator);
      config.states_max = args.quick ? std::min<uint64_t>(args.states, 200) : args.states;
      config.stride_to_cap = true;
      config.violations_kept = 2;
      auto report = properties::Explore(config);
      if (!report.ok()) return ReportError(workload.name, report.status()) * 2;
      ++cells;
      states += report->states_checked;
      recover_seconds += report->elapsed_seconds;
      const bool failed = report->violating_states > 0 || !report->workload_error.empty();
      failing_cells += failed;
      std::string verdicts;
      for (int i = 0; i < properties::kVerdictCount; ++i)
        verdicts += (i ? "/" : "") + std::to_string(report->verdicts[i]);
      const std::string label = w < builtins ? workload.name : workload.name + " (generated)";
      std::printf("  %-22s %-10s %8llu %9llu  %s\n", label.c_str(), enumerator,
                  static_cast<unsigned long long>(report->states_checked),
                  static_cast<unsigned long long>(report->violating_states), verdicts.c_str());
      std::fflush(stdout);
      nlohmann::json cell = properties::ReportToJson(*report);
      cell["workload"] = workload.name;
      cell["policy"] = policy;
      json["cells"].push_back(cell);
      if (!report->workload_error.empty())
        std::printf("    FAIL workload stopped: %s\n", report->workload_error.c_str());
      for (const properties::FoundViolation& v : report->violations) {
        Reproducer r{workload,  run_options, config.recovery, v.state_id, v.invariant,
                     v.message, {},          v.raw_findings};
        std::string name =
            workload.name + "-" + args.qemu.cache + "-" + enumerator + "-" + v.invariant;
        for (char& ch : name) ch = ch == ':' || ch == '/' ? '_' : ch;
        const std::string dir = base + "/" + name;
        nlohmann::json failure = {{"workload", workload.name}, {"policy", policy},
                                  {"enumerator", enumerator},  {"invariant", v.invariant},
                                  {"state_id", v.state_id},    {"message", v.message}};
        if (WriteReproducer(dir, r).ok()) {
          failure["reproducer"] = fs::absolute(dir).string();
          nlohmann::json one = nlohmann::json::array({failure});
          const auto lines = QemuCheckViolations(args.qemu.qemu_img, one);
          failure = one[0];
          std::printf("    FAIL %s during %s: %s\n      reproducer: %s\n      %s\n",
                      v.invariant.c_str(), v.op_class.c_str(), v.message.c_str(),
                      failure["reproducer"].get<std::string>().c_str(),
                      lines.empty() ? "" : lines[0].c_str());
        }
        json["failures"].push_back(failure);
      }
    }
  }
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "  %llu cells, %llu states, %llu failing cells; %.1f s (qemu-io runs %.1f s, recovery "
      "%.1f s: %.0f states/s)\n",
      static_cast<unsigned long long>(cells), static_cast<unsigned long long>(states),
      static_cast<unsigned long long>(failing_cells), elapsed, run_seconds, recover_seconds,
      recover_seconds > 0 ? static_cast<double>(states) / recover_seconds : 0.0);
  json["states_checked"] = states;
  json["failing_cells"] = failing_cells;
  json["elapsed_seconds"] = elapsed;
  json["qemu_run_seconds"] = run_seconds;
  json["recovery_seconds"] = recover_seconds;
  if (!WriteReport(args.report_path, json))
    return ReportError(args.report_path, Status::IoError("cannot write report")) * 2;
  return failing_cells > 0 ? 1 : 0;
}

}  // namespace qcrash::cli
