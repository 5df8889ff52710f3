// `qcrash replay REPORT.json#N` (or a reproducer directory): rebuilds exactly
// the crash state of violation N and re-runs recovery, printing the verdict.
// Exit 1 when the violation still reproduces, 0 when the state is now clean,
// 2 on usage or I/O errors.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli/cli_common.h"
#include "cli/reproducer.h"
#include "properties/json.h"

namespace qcrash::cli {
namespace {

Result<std::string> ReproducerDir(const std::string& target) {
  if (std::filesystem::is_directory(target)) return target;
  const size_t hash = target.rfind('#');
  if (hash == std::string::npos)
    return Status::InvalidArgument("expected REPORT.json#N or a reproducer directory");
  const std::string path = target.substr(0, hash);
  char* end = nullptr;
  const unsigned long index = std::strtoul(target.c_str() + hash + 1, &end, 10);
  if (*end != '\0' || hash + 1 == target.size())
    return Status::InvalidArgument("bad violation index in '" + target + "'");
  std::ifstream in(path);
  if (!in) return Status::IoError(path + ": cannot open report");
  const nlohmann::json report = nlohmann::json::parse(in, nullptr, false);
  if (report.is_discarded() || !report.contains("violations") || !report["violations"].is_array()) {
    return Status::InvalidArgument(path + ": not a qcrash explore report");
  }
  if (index >= report["violations"].size()) {
    return Status::InvalidArgument(path + ": has " + std::to_string(report["violations"].size()) +
                                   " violations");
  }
  const nlohmann::json& v = report["violations"][index];
  if (!v.contains("reproducer") || !v["reproducer"].is_string()) {
    return Status::InvalidArgument(path + ": violation " + std::to_string(index) +
                                   " has no reproducer");
  }
  return v["reproducer"].get<std::string>();
}

}  // namespace

int RunReplay(int argc, char** argv) {
  if (argc != 2 || std::string(argv[1]) == "--help") {
    std::fprintf(argc == 2 ? stdout : stderr,
                 "usage: qcrash replay REPORT.json#N | REPRODUCER_DIR\n");
    return argc == 2 ? 0 : 2;
  }
  auto dir = ReproducerDir(argv[1]);
  if (!dir.ok()) return ReportError(argv[1], dir.status()) * 2;
  auto reproducer = ReadReproducer(*dir);
  if (!reproducer.ok()) return ReportError(*dir, reproducer.status()) * 2;
  auto result = properties::ReplayState(reproducer->workload, reproducer->run, reproducer->recovery,
                                        reproducer->state_id);
  if (!result.ok()) return ReportError(*dir, result.status()) * 2;
  std::printf("qcrash replay: %s: workload %s (%zu ops), policy %s, state %s\n", dir->c_str(),
              reproducer->workload.name.c_str(), reproducer->workload.ops.size(),
              engine::PolicyName(reproducer->run.open.policy), reproducer->state_id.c_str());
  std::printf("  verdict: %s\n", properties::VerdictName(result->verdict));
  for (const std::string& finding : result->raw_findings)
    std::printf("  raw check: %s\n", finding.c_str());
  for (const properties::Violation& v : result->violations) {
    std::printf("  violation %s: %s\n", v.invariant.c_str(), v.message.c_str());
  }
  if (result->violations.empty()) std::printf("  no violation: the state recovers cleanly\n");
  return result->violations.empty() ? 0 : 1;
}

}  // namespace qcrash::cli
