// `qcrash check [-r leaks|all] [--output=human|json] [-U] [-q] [-f qcow2] FILE`:
// qemu-img check's output and exit codes (0 clean, 1 check failed, 2
// corruptions, 3 leaks only) over engine::CheckImage, plus the findings
// (offset, cluster, owner) and the guest ranges a repair dropped.
#include "cli/check_command.h"

#include <getopt.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/cli_common.h"
#include "cli/progress.h"
#include "engine/check.h"
#include "engine/file_device.h"
#include "engine/header.h"
#include "engine/image_lock.h"

namespace qcrash::cli {
namespace {

constexpr const char* kUsage =
    "usage: qcrash check [-q] [-p] [-f qcow2] [--output=human|json] [-r leaks|all] [-U] FILE\n"
    "  -p: progress on stderr (by itself on a terminal for images of 1 GiB or more)\n";

struct CheckArgs {
  std::string path;
  engine::RepairMode repair = engine::RepairMode::kNone;
  bool json = false;
  bool quiet = false;
  bool force_share = false;
  bool progress = false;  // -p (qemu-img check has none: ours, as convert's)
};

// Returns -1 when parsing succeeded, else the exit code.
int ParseArgs(int argc, char** argv, CheckArgs& args) {
  static const option kLong[] = {
      {"output", required_argument, nullptr, 'o'}, {"repair", required_argument, nullptr, 'r'},
      {"force-share", no_argument, nullptr, 'U'},  {"format", required_argument, nullptr, 'f'},
      {"help", no_argument, nullptr, 'h'},         {nullptr, 0, nullptr, 0}};
  ResetGetopt();
  for (int c; (c = getopt_long(argc, argv, "hf:r:qUT:p", kLong, nullptr)) != -1;) {
    const std::string value = optarg ? optarg : "";
    switch (c) {
      case 'h':
        std::printf("%s", kUsage);
        return 0;
      case 'f':
        if (value != "qcow2") return ReportUsage("unsupported format '" + value + "' (only qcow2)");
        break;
      case 'T':
        break;  // cache mode: qcrash always uses the page cache
      case 'q':
        args.quiet = true;
        break;
      case 'U':
        args.force_share = true;
        break;
      case 'p':
        args.progress = true;
        break;
      case 'r':
        if (value == "leaks") {
          args.repair = engine::RepairMode::kLeaks;
        } else if (value == "all") {
          args.repair = engine::RepairMode::kAll;
        } else {
          return ReportUsage("Unknown option value for -r (expecting 'leaks' or 'all'): " + value);
        }
        break;
      case 'o':
        if (value == "json") {
          args.json = true;
        } else if (value != "human") {
          return ReportUsage("--output must be used with human or json as argument.");
        }
        break;
      default:
        std::fprintf(stderr, "%s", kUsage);
        return 1;
    }
  }
  if (optind + 1 != argc) {
    std::fprintf(stderr, "%s", kUsage);
    return 1;
  }
  args.path = argv[optind];
  if (args.force_share && args.repair != engine::RepairMode::kNone) {
    return ReportUsage("--force-share/-U is only allowed without -r (a repair writes the image)");
  }
  return -1;
}

nlohmann::ordered_json FindingsJson(const engine::CheckReport& report) {
  nlohmann::ordered_json findings = nlohmann::ordered_json::array();
  for (const engine::Finding& f : report.findings) {
    findings.push_back({{"kind", engine::FindingKindName(f.kind)},
                        {"severity", engine::SeverityName(f.severity)},
                        {"repaired", f.repaired},
                        {"host-offset", f.host_offset},
                        {"cluster", f.cluster_index},
                        {"owner", f.owner},
                        {"message", f.message}});
  }
  return findings;
}

// qemu-img's fields in the order its QDict prints them; zero-valued optional
// fields are left out, as qemu-img leaves them out.
nlohmann::ordered_json CheckJson(const std::string& path, const engine::CheckReport& report,
                                 const engine::CheckReport* repair) {
  const engine::CheckReport& fixed = repair ? *repair : report;
  nlohmann::ordered_json j;
  auto optional = [&](const char* key, uint64_t value) {
    if (value != 0) j[key] = value;
  };
  optional("image-end-offset", report.image_end_offset);
  optional("compressed-clusters", report.compressed_clusters);
  optional("total-clusters", report.total_clusters);
  optional("corruptions", report.corruptions);
  optional("corruptions-fixed", fixed.corruptions_fixed);
  j["check-errors"] = report.check_errors;
  optional("leaks", report.leaks);
  optional("leaks-fixed", fixed.leaks_fixed);
  optional("allocated-clusters", report.allocated_clusters);
  j["filename"] = path;
  j["format"] = "qcow2";
  optional("fragmented-clusters", report.fragmented_clusters);
  j["findings"] = FindingsJson(repair ? *repair : report);
  if (repair) {
    j["remaining-findings"] = FindingsJson(report);
    nlohmann::ordered_json dropped = nlohmann::ordered_json::array();
    for (const engine::DroppedRange& d : repair->dropped) {
      dropped.push_back({{"table", d.table},
                         {"guest-offset", d.guest_offset},
                         {"length", d.length_bytes},
                         {"reason", d.reason}});
    }
    j["dropped-ranges"] = dropped;
    j["refcounts-rebuilt"] = repair->refcounts_rebuilt;
  }
  return j;
}

// qemu-img's dump_human_image_check.
void PrintHumanSummary(const engine::CheckReport& r) {
  if (r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0) {
    std::printf("No errors were found on the image.\n");
  } else {
    if (r.corruptions) {
      std::printf(
          "\n%llu errors were found on the image.\n"
          "Data may be corrupted, or further writes to the image may corrupt it.\n",
          static_cast<unsigned long long>(r.corruptions));
    }
    if (r.leaks) {
      std::printf(
          "\n%llu leaked clusters were found on the image.\n"
          "This means waste of disk space, but no harm to data.\n",
          static_cast<unsigned long long>(r.leaks));
    }
    if (r.check_errors) {
      std::printf("\n%llu internal errors have occurred during the check.\n",
                  static_cast<unsigned long long>(r.check_errors));
    }
  }
  if (r.total_clusters != 0 && r.allocated_clusters != 0) {
    const double allocated = static_cast<double>(r.allocated_clusters);
    std::printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                static_cast<unsigned long long>(r.allocated_clusters),
                static_cast<unsigned long long>(r.total_clusters),
                allocated * 100.0 / static_cast<double>(r.total_clusters),
                static_cast<double>(r.fragmented_clusters) * 100.0 / allocated,
                static_cast<double>(r.compressed_clusters) * 100.0 / allocated);
  }
  if (r.image_end_offset != 0) {
    std::printf("Image end offset: %llu\n", static_cast<unsigned long long>(r.image_end_offset));
  }
}

// The per-finding lines qemu-img writes on stderr while it checks.
void PrintFindings(const engine::CheckReport& r) {
  for (const engine::Finding& f : r.findings) {
    std::fprintf(stderr, "%s%s\n", f.severity == engine::Severity::kInfo ? "Warning: " : "",
                 f.message.c_str());
  }
  if (r.findings_omitted) {
    std::fprintf(stderr, "(%llu more findings not listed)\n",
                 static_cast<unsigned long long>(r.findings_omitted));
  }
  for (const engine::DroppedRange& d : r.dropped) {
    std::fprintf(stderr, "Repair dropped data: %s guest %s..%s (%s)\n", d.table.c_str(),
                 HexOffset(d.guest_offset).c_str(),
                 HexOffset(d.guest_offset + d.length_bytes - 1).c_str(), d.reason.c_str());
  }
}

// `stopped` (when given) tells a check or repair that stopped on an image
// that opens (a limit on hostile input: qemu-img's "Check failed") from an
// image that cannot be opened.
Result<engine::CheckReport> RunOnce(const std::string& path, engine::RepairMode mode,
                                    bool* stopped = nullptr, ProgressLine* progress = nullptr) {
  const bool write = mode != engine::RepairMode::kNone;
  QCRASH_ASSIGN_OR_RETURN(
      std::unique_ptr<FileDevice> device,
      FileDevice::Open(path, write ? FileDevice::Mode::kReadWrite : FileDevice::Mode::kReadOnly));
  engine::CheckOptions options{mode};
  if (progress) options.progress = [progress](double percent) { progress->Update(percent); };
  auto report = engine::CheckImage(*device, options);
  if (progress) progress->Finish();
  if (stopped) *stopped = !report.ok() && engine::ReadHeader(*device).ok();
  return report;
}

}  // namespace

int RunCheck(int argc, char** argv) {
  CheckArgs args;
  if (const int exit_code = ParseArgs(argc, argv, args); exit_code >= 0) return exit_code;
  if (args.repair != engine::RepairMode::kNone) {
    // qemu-img cannot open such an image at all; a repair must not write it.
    if (const Status refused = RefuseOwnBacking(args.path); !refused.ok()) {
      std::fprintf(stderr, "qcrash: Could not open '%s': %s\n", args.path.c_str(),
                   refused.ToString().c_str());
      return 1;
    }
  }
  std::unique_ptr<engine::ImageLock> lock;
  if (!args.force_share) {
    auto acquired = engine::ImageLock::Acquire(args.path, args.repair == engine::RepairMode::kNone
                                                              ? engine::ImageLock::Access::kRead
                                                              : engine::ImageLock::Access::kWrite);
    if (!acquired.ok()) {
      std::fprintf(stderr, "qcrash: Could not open '%s': %s\n", args.path.c_str(),
                   acquired.status().message().c_str());
      return 1;
    }
    lock = std::move(acquired).value();
  }
  bool stopped = false;
  // A small image's check is over before a line would help.
  constexpr uintmax_t kLargeImage = uintmax_t{1} << 30;
  std::error_code size_error;
  const bool large = std::filesystem::file_size(args.path, size_error) >= kLargeImage;
  ProgressLine progress(ProgressWanted(args.progress, args.quiet) && (args.progress || large));
  auto first = RunOnce(args.path, args.repair, &stopped, &progress);
  if (!first.ok()) {
    if (stopped) {
      std::fprintf(stderr, "qcrash: Check failed: '%s': %s\n", args.path.c_str(),
                   first.status().ToString().c_str());
    } else {
      std::fprintf(stderr, "qcrash: Could not open '%s': %s\n", args.path.c_str(),
                   first.status().ToString().c_str());
    }
    return 1;
  }
  if (!args.quiet) PrintFindings(*first);
  engine::CheckReport report = *first;
  const bool repaired = first->leaks_fixed != 0 || first->corruptions_fixed != 0;
  if (repaired) {
    // As qemu-img: report the fixes, then double-check the fixed image.
    if (!args.json && !args.quiet) {
      std::printf(
          "The following inconsistencies were found and repaired:\n\n"
          "    %llu leaked clusters\n    %llu corruptions\n\n"
          "Double checking the fixed image now...\n",
          static_cast<unsigned long long>(first->leaks_fixed),
          static_cast<unsigned long long>(first->corruptions_fixed));
    }
    auto second = RunOnce(args.path, engine::RepairMode::kNone);
    if (!second.ok()) {
      std::fprintf(stderr, "qcrash: Check failed: %s\n", second.status().ToString().c_str());
      return 1;
    }
    if (!args.quiet) PrintFindings(*second);
    report = *second;
  }
  if (!args.quiet) {
    if (args.json) {
      std::printf("%s\n",
                  DumpJson(CheckJson(args.path, report, repaired ? &*first : nullptr), 4).c_str());
    } else {
      PrintHumanSummary(report);
    }
  }
  if (report.check_errors) {
    std::fprintf(stderr, "qcrash: Check failed\n");
    return 1;
  }
  return report.corruptions ? 2 : report.leaks ? 3 : 0;
}

}  // namespace qcrash::cli
