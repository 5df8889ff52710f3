// `qcrash explore`: run a workload under a policy, enumerate its crash
// states, recover and check each, print a summary, write a JSON report and a
// reproducer directory per violation. Exit 1 on a violation, 0 when clean,
// 2 on usage or I/O errors.
#include <getopt.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "cli/cli_common.h"
#include "cli/explore_device_faults.h"
#include "cli/explore_jobs.h"
#include "cli/explore_qemu.h"
#include "cli/junit.h"
#include "cli/reproducer.h"
#include "cli/shard_env.h"
#include "engine/bug_catalogue.h"
#include "properties/generate.h"
#include "properties/json.h"
#include "properties/report_page.h"
#include "properties/suite.h"

namespace qcrash::cli {
namespace {

constexpr int kExitUsage = 2;

const char kUsage[] =
    "usage: qcrash explore [--workload builtin:NAME|FILE.json] [--policy P]\n"
    "         [--enumerator E] [--sector 512|4096] [--seed S] [--shard i/N] [--jobs 1..64]\n"
    "         [--budget SECONDS] [--states N] [--report FILE.json] [--reproducers DIR]\n"
    "         [--bug SWITCH] [--data-ordering strict|qemu] [--cache-l2 N]\n"
    "         [--cache-refcount N] [--nested E] [--no-minimize] [--violations N] [--quick]\n"
    "         [--no-dedup]\n"
    "         [--generated N] [--recovery-only] [--corrupt CLASS[:N]] [--non-atomic]\n"
    "         [--junit FILE.xml]\n"
    "         [--journal commit=header|descriptor,recovery=header|scan,\n"
    "                    terminator=blank|escape,checksum=crc32|bytesum|none,size=BYTES]\n"
    "  policies: writethrough ordered lazy extent journal unsafe\n"
    "  enumerators: prefix drop-one tear-one bounded:K exhaustive:LIMIT random[:N] epochs\n"
    "    data:LIMIT (every combination of the data sectors, metadata at latest) eio\n"
    "  eio: each read, write and flush of the run fails once in turn (EIO); the guest op must\n"
    "    fail, and after a close the image must recover as a crash image does (I13)\n"
    "  --no-dedup: recover every state in full, not once per metadata state (the reference\n"
    "  the deduplicated verdicts are held to; slower)\n"
    "  --violations N: reproducers for the first state of up to N invariant x operation\n"
    "  classes (8; 4 with --bug)\n"
    "  --recovery-only: hold recovery alone to account (I3, I7, I8), for unsafe crash states\n"
    "  --corrupt CLASS[:N]: corrupt the image after the workload (dangling-free, shared-cluster,\n"
    "  ...; entry N) and crash its repair (--nested, epochs by default): I8\n"
    "  --non-atomic: a pending sector may also hold two versions cut mid-sector, or garbage\n"
    "  --shard i/N: shard i of N, counted from 0 (0/2 and 1/2 cover everything); without it,\n"
    "    JOB_COMPLETION_INDEX with QCRASH_SHARD_COUNT (or JOB_COMPLETIONS), or\n"
    "    SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT (from SLURM_ARRAY_TASK_MIN) give it;\n"
    "    `qcrash report merge` adds the shards' reports up\n"
    "  --junit FILE.xml: JUnit XML, a testcase per workload x policy cell\n"
    "  no --workload: the suite (every built-in and generated workloads, every safe policy)\n"
    "  in --budget seconds (20; --quick 2), or with --generated N a fixed amount of work\n"
    "  --bug SWITCH (alias --fault): a known bug switched on; --list-bugs [--output=json]\n"
    "  lists the catalogue\n"
    "  --engine qemu [--qemu-io PATH] [--qemu-img PATH] [--qemu-cache MODE] [--qemu-opts OPTS]\n"
    "    [--qemu-create-opts OPTS] [--qemu-check-sample N]: crash-test QEMU's own qcow2 driver:\n"
    "    the workload runs through qemu-io over blklogwrites; its log is explored (no --workload:\n"
    "    every built-in workload); qemu-img check judges each violating state too\n"
    "    MODE: writeback none writethrough directsync unsafe; OPTS: qcow2 runtime options\n"
    "  --log FILE --base IMAGE: explore a dm-log-writes log (blklogwrites, Linux dm-log-writes)\n"
    "    written over IMAGE, with the structural invariants only (no workload, no data verdicts)\n"
    "  --device-fault lying-flush|misdirect [--workload W] [--policy P] [--report FILE]:\n"
    "  measure a device that lies about flushes or misdirects a write (exit 0 when it ran)\n";

struct Args {
  properties::ExploreConfig config;
  std::string workload;  // empty: the suite (properties/suite.h)
  std::string enumerator = "prefix";
  bool quick = false;      // --quick: the suite in about 2 s
  int64_t generated = -1;  // --generated N: exactly N generated workloads, no time budget
  bool policy_given = false;
  bool journal_given = false;
  bool enumerator_given = false;
  bool violations_given = false;
  uint64_t seed = 1;
  std::string shard;
  uint32_t jobs = 1;
  std::string report_path;
  std::string reproducers_dir;
  bool list_bugs = false;    // --list-bugs (--list-faults)
  bool json_output = false;  // --output=json (with --list-bugs)
  bool qemu = false;         // --engine qemu
  properties::QemuEngineOptions qemu_options;
  uint64_t qemu_check_sample = 0;
  std::string log_path, base_path;  // --log, --base
  std::string junit_path;           // --junit FILE.xml
};

// --journal commit=header|descriptor,recovery=header|scan,terminator=blank|escape,
//           checksum=crc32|bytesum|none: the journal draft's spec variants.
bool ParseJournalVariant(const std::string& text, engine::JournalOptions& journal) {
  auto list = ParseOptionList(text);
  if (!list.ok()) return false;
  for (const auto& [key, value] : *list) {
    if (key == "commit" && (value == "header" || value == "descriptor")) {
      journal.commit = value == "header" ? engine::JournalCommit::kHeader
                                         : engine::JournalCommit::kDescriptorFlag;
    } else if (key == "recovery" && (value == "header" || value == "scan")) {
      journal.recovery = value == "header" ? engine::JournalRecovery::kHeaderBookkeeping
                                           : engine::JournalRecovery::kScanOnly;
    } else if (key == "terminator" && (value == "blank" || value == "escape")) {
      journal.terminator = value == "blank" ? engine::JournalTerminator::kBlankBlock
                                            : engine::JournalTerminator::kEscapeFlag;
    } else if (key == "size") {
      auto size = ParseSize(value);
      if (!size.ok() || *size < 4096 || *size > (uint64_t{64} << 20)) return false;
      journal.size_bytes = *size;
    } else if (key == "checksum" && (value == "crc32" || value == "bytesum" || value == "none")) {
      journal.checksums = value != "none";
      journal.byte_sum_checksum = value == "bytesum";
    } else {
      return false;
    }
  }
  return true;
}

int Usage(const std::string& message) {
  std::fprintf(stderr, "qcrash explore: %s\n%s", message.c_str(), kUsage);
  return kExitUsage;
}

// "random" and "random:N" take the seed from --seed.
std::string ExpandEnumerator(const std::string& text, uint64_t seed) {
  if (text == "random") return "random:" + std::to_string(seed) + ":1000";
  if (text.rfind("random:", 0) == 0 && text.find(':', 7) == std::string::npos) {
    return "random:" + std::to_string(seed) + ":" + text.substr(7);
  }
  return text;
}

int ParseArgs(int argc, char** argv, Args& args) {
  static const option kOptions[] = {{"workload", required_argument, nullptr, 'w'},
                                    {"policy", required_argument, nullptr, 'p'},
                                    {"enumerator", required_argument, nullptr, 'e'},
                                    {"sector", required_argument, nullptr, 's'},
                                    {"seed", required_argument, nullptr, 'S'},
                                    {"shard", required_argument, nullptr, 'x'},
                                    {"jobs", required_argument, nullptr, 'j'},
                                    {"budget", required_argument, nullptr, 'b'},
                                    {"states", required_argument, nullptr, 'n'},
                                    {"report", required_argument, nullptr, 'r'},
                                    {"reproducers", required_argument, nullptr, 'R'},
                                    {"bug", required_argument, nullptr, 'f'},
                                    {"fault", required_argument, nullptr, 'f'},
                                    {"list-bugs", no_argument, nullptr, 'l'},
                                    {"list-faults", no_argument, nullptr, 'l'},
                                    {"output", required_argument, nullptr, 'o'},
                                    {"data-ordering", required_argument, nullptr, 'd'},
                                    {"cache-l2", required_argument, nullptr, 'L'},
                                    {"cache-refcount", required_argument, nullptr, 'C'},
                                    {"nested", required_argument, nullptr, 'N'},
                                    {"no-minimize", no_argument, nullptr, 'M'},
                                    {"violations", required_argument, nullptr, 'V'},
                                    {"recovery-only", no_argument, nullptr, 'O'},
                                    {"corrupt", required_argument, nullptr, 'K'},
                                    {"non-atomic", no_argument, nullptr, 'A'},
                                    {"quick", no_argument, nullptr, 'q'},
                                    {"no-dedup", no_argument, nullptr, 1100},
                                    {"generated", required_argument, nullptr, 'G'},
                                    {"journal", required_argument, nullptr, 'J'},
                                    {"engine", required_argument, nullptr, 1000},
                                    {"qemu-io", required_argument, nullptr, 1001},
                                    {"qemu-img", required_argument, nullptr, 1002},
                                    {"qemu-cache", required_argument, nullptr, 1003},
                                    {"qemu-opts", required_argument, nullptr, 1004},
                                    {"qemu-create-opts", required_argument, nullptr, 1005},
                                    {"qemu-check-sample", required_argument, nullptr, 1006},
                                    {"log", required_argument, nullptr, 1007},
                                    {"base", required_argument, nullptr, 1008},
                                    {"junit", required_argument, nullptr, 1009},
                                    {"help", no_argument, nullptr, 'h'},
                                    {nullptr, 0, nullptr, 0}};
  ResetGetopt();
  int c;
  while ((c = getopt_long(argc, argv, "h", kOptions, nullptr)) != -1) {
    const std::string value = optarg ? optarg : "";
    switch (c) {
      case 'w':
        args.workload = value;
        break;
      case 1000:
        if (value != "qemu" && value != "qcrash")
          return Usage("bad --engine '" + value + "': want qcrash (ours) or qemu");
        args.qemu = value == "qemu";
        break;
      case 1001:
        args.qemu_options.qemu_io = value;
        break;
      case 1002:
        args.qemu_options.qemu_img = value;
        break;
      case 1003:
        if (value != "writeback" && value != "none" && value != "writethrough" &&
            value != "directsync" && value != "unsafe") {
          return Usage("bad --qemu-cache '" + value +
                       "': want writeback, none, writethrough, directsync or unsafe");
        }
        args.qemu_options.cache = value;
        break;
      case 1004:
        args.qemu_options.runtime_opts = value;
        break;
      case 1005:
        args.qemu_options.create_opts = value;
        break;
      case 1006: {
        char* end = nullptr;
        const unsigned long long n = std::strtoull(value.c_str(), &end, 10);
        if (value.empty() || *end != '\0' || value[0] == '-')
          return Usage("bad --qemu-check-sample '" + value + "': want a count of states");
        args.qemu_check_sample = n;
        break;
      }
      case 1007:
        args.log_path = value;
        break;
      case 1008:
        args.base_path = value;
        break;
      case 1009:
        args.junit_path = value;
        break;
      case 'e':
        args.enumerator = value;
        args.enumerator_given = true;
        break;
      case 'q':
        args.quick = true;
        break;
      case 'G': {
        char* end = nullptr;
        const long long n = std::strtoll(value.c_str(), &end, 10);
        if (value.empty() || *end != '\0' || n < 0 || n > 100000) {
          return Usage("bad --generated '" + value +
                       "': want a count of generated workloads, 0 or more");
        }
        args.generated = n;
        break;
      }
      case 'x': {
        // i/N: shard i (counted from 0) of N disjoint shards whose union is
        // the whole enumeration (state k belongs to shard k mod N).
        const size_t slash = value.find('/');
        char* end = nullptr;
        const unsigned long long index = std::strtoull(value.c_str(), &end, 10);
        const bool index_ok =
            slash != std::string::npos && slash > 0 && end == value.c_str() + slash;
        const unsigned long long count =
            index_ok ? std::strtoull(value.c_str() + slash + 1, &end, 10) : 0;
        if (!index_ok || slash + 1 == value.size() || *end != '\0' || value[0] == '-' ||
            value[slash + 1] == '-' || count == 0 || index >= count) {
          return Usage("bad --shard '" + value +
                       "': want i/N with 0 <= i < N (shards are counted from 0)");
        }
        args.shard = value;
        break;
      }
      case 'r':
        args.report_path = value;
        break;
      case 'R':
        args.reproducers_dir = value;
        break;
      case 'N':
        args.config.recovery.nested_enumerator = value;
        break;
      case 'M':
        args.config.minimize = false;
        break;
      case 1100:
        args.config.dedup = false;
        break;
      case 'O':
        args.config.recovery.recovery_invariants_only = true;
        break;
      case 'K': {
        // CLASS[:N]: the image after the workload, corrupted (entry N of
        // the class); the crash states are those of its repair (I8).
        const size_t colon = value.find(':');
        auto corruption = properties::ParseCorruption(value.substr(0, colon));
        char* end = nullptr;
        const unsigned long long choice =
            colon == std::string::npos ? 0 : std::strtoull(value.c_str() + colon + 1, &end, 10);
        if (!corruption ||
            (colon != std::string::npos &&
             (colon + 1 == value.size() || *end != '\0' || value[colon + 1] == '-'))) {
          std::string names;
          for (int k = 0; k < properties::kCorruptionCount; ++k)
            names += std::string(k ? ", " : "") +
                     properties::CorruptionName(static_cast<properties::Corruption>(k));
          return Usage("bad --corrupt '" + value + "': want CLASS[:N], CLASS one of " + names);
        }
        args.config.run.corruption = corruption;
        args.config.run.corruption_choice = choice;
        args.config.recovery.recovery_invariants_only = true;
        args.config.recovery.nested_states_max = 4096;  // every crash state of the repair
        if (args.config.recovery.nested_enumerator.empty())
          args.config.recovery.nested_enumerator = "epochs";
        break;
      }
      case 'A':
        args.config.run.non_atomic.enabled = true;
        break;
      case 'J':
        args.journal_given = true;
        if (!ParseJournalVariant(value, args.config.run.open.journal)) {
          return Usage("bad --journal '" + value +
                       "' (commit=header|descriptor, recovery=header|scan, "
                       "terminator=blank|escape, checksum=crc32|bytesum|none, size=4k..64M)");
        }
        break;
      case 'p':
      case 'f':
      case 'd':
      case 'L':
      case 'C': {
        if (c == 'p') args.policy_given = true;
        const char* name = c == 'p'   ? "policy"
                           : c == 'f' ? "bug"
                           : c == 'd' ? "data-ordering"
                           : c == 'L' ? "cache-l2"
                                      : "cache-refcount";
        if (!ApplyEngineOption(name, optarg, args.config.run.open)) return kExitUsage;
        break;
      }
      case 's':
        if (value != "512" && value != "4096") return Usage("--sector must be 512 or 4096");
        args.config.run.sector_bytes = static_cast<uint32_t>(std::stoul(value));
        break;
      case 'S':
      case 'j':
      case 'b':
      case 'V':
      case 'n': {
        char* end = nullptr;
        const double number = std::strtod(value.c_str(), &end);
        if (value.empty() || *end != '\0' || !(number >= 0) || std::isinf(number)) {
          return Usage("bad number '" + value + "'");
        }
        if (c == 'S') args.seed = static_cast<uint64_t>(number);
        if (c == 'j') {
          if (number < 1 || number > 64 || number != std::floor(number)) {
            return Usage("bad --jobs '" + value + "': want a whole number from 1 to 64");
          }
          args.jobs = static_cast<uint32_t>(number);
        }
        if (c == 'b') args.config.budget_seconds = number;
        if (c == 'n') args.config.states_max = static_cast<uint64_t>(number);
        if (c == 'V') {
          if (number < 1 || number != std::floor(number))
            return Usage("bad --violations '" + value + "': want a whole number from 1");
          args.violations_given = true;
          args.config.violations_kept = static_cast<size_t>(number);
        }
        break;
      }
      case 'h':
        std::printf("%s", kUsage);
        return -1;
      case 'l':
        args.list_bugs = true;
        break;
      case 'o':
        if (value != "human" && value != "json")
          return Usage("--output must be human or json, not '" + value + "'");
        args.json_output = value == "json";
        break;
      default:
        return Usage("unknown option");
    }
  }
  if (optind != argc) return Usage(std::string("unexpected argument '") + argv[optind] + "'");
  if (args.shard.empty() && !args.list_bugs) {
    // An explicit --shard wins; else a batch runner's task index (shard_env.h).
    std::string source;
    auto shard = ShardFromEnvironment(&source);
    if (!shard.ok()) return Usage(shard.status().message());
    if (!shard->empty()) {
      if (args.workload.empty() && args.log_path.empty()) {
        return Usage("a shard from " + source +
                     " needs --workload: the suite runs to a time budget, so its shards would "
                     "not add up to one run");
      }
      args.shard = *shard;
      std::fprintf(stderr, "qcrash explore: shard %s (from %s)\n", shard->c_str(), source.c_str());
    }
  }
  if (args.log_path.empty() != args.base_path.empty())
    return Usage("--log and --base go together: the log, and the image it was written over");
  if (!args.log_path.empty() && (args.qemu || !args.workload.empty()))
    return Usage("--log explores a log as it is: no --engine qemu, no --workload");
  if ((args.qemu || !args.log_path.empty()) &&
      (args.config.run.open.faults.any() || args.journal_given || args.config.run.corruption ||
       args.enumerator == "eio")) {
    return Usage(
        "--bug, --journal, --corrupt and the eio enumerator change our engine; they do not "
        "apply to --engine qemu or --log");
  }
  if (args.qemu)
    args.config.run.qemu = std::make_shared<properties::QemuEngineOptions>(args.qemu_options);
  return 0;
}

int Prepare(Args& args) {
  if (args.workload.rfind("builtin:", 0) == 0) {
    auto workload = properties::BuiltinWorkload(args.workload.substr(8));
    if (!workload.ok()) {
      std::string names;
      for (const std::string& n : properties::BuiltinWorkloadNames()) names += " " + n;
      return Usage(workload.status().message() + " (built-in:" + names + ")");
    }
    args.config.workload = *workload;
  } else if (args.workload.rfind("random:", 0) == 0) {
    uint64_t seed = 0;
    size_t ops = 0;
    if (!properties::ParseRandomSpec(args.workload.substr(7), seed, ops)) {
      return Usage("bad --workload '" + args.workload +
                   "': want random:SEED or random:SEED:OPS (1..10000 ops)");
    }
    // The seed decides the engine configuration too (cache sizes, sector
    // size, data ordering, journal variant); the command line's policy and
    // bug switches are kept.
    properties::GeneratedCase generated =
        properties::GenerateCase(seed, ops, args.config.run.open.policy);
    const engine::BugSwitches bugs = args.config.run.open.faults;
    const engine::JournalOptions journal = args.config.run.open.journal;
    args.config.workload = generated.workload;
    const auto qemu = args.config.run.qemu;
    args.config.run = generated.run;
    args.config.run.qemu = qemu;  // --engine qemu runs the generated workload too
    args.config.run.open.faults = bugs;
    if (args.journal_given) args.config.run.open.journal = journal;
  } else {
    auto workload = properties::LoadWorkloadFile(args.workload);
    if (!workload.ok()) return ReportError(args.workload, workload.status()) * kExitUsage;
    args.config.workload = *workload;
  }
  // eio is no crash enumerator (properties/eio.h): its cases shard as states do.
  args.config.io_errors = args.enumerator == "eio";
  // Under --states, eio takes a stride through every request, not the first N.
  args.config.stride_to_cap = args.config.io_errors;
  auto spec = sim::ParseEnumeratorSpec(
      (args.config.io_errors ? "prefix" : ExpandEnumerator(args.enumerator, args.seed)) +
      (args.shard.empty() ? "" : "@" + args.shard));
  if (!spec.ok()) return Usage(spec.status().message());
  args.config.enumerator = *spec;
  if (args.config.run.open.faults.any() && !args.violations_given) args.config.violations_kept = 4;
  return 0;
}

// Progress on stderr: rewritten in place on a terminal, else one line
// every few seconds (a CI log or a pipe), with the time left at this rate.
void PrintProgress(const properties::ExploreReport& r, bool tty) {
  static auto last = std::chrono::steady_clock::now();
  const auto now = std::chrono::steady_clock::now();
  if (!tty && now - last < std::chrono::seconds(3)) return;
  last = now;
  const double rate = r.states_per_second();
  const uint64_t left = r.states_total > r.states_checked ? r.states_total - r.states_checked : 0;
  std::fprintf(stderr,
               "%sqcrash explore: %llu/%llu states, %.0f states/s, ETA %.0f s, %llu violating%s",
               tty ? "\r" : "", static_cast<unsigned long long>(r.states_checked),
               static_cast<unsigned long long>(r.states_total), rate,
               rate > 0 ? static_cast<double>(left) / rate : 0.0,
               static_cast<unsigned long long>(r.violating_states), tty ? "  " : "\n");
}

// A state id shortened for a summary line: the point and the first few
// deviations, then how many more (the reproducer keeps the whole id).
std::string ShortStateId(const std::string& id) {
  size_t at = id.find(':');
  for (int kept = 0; at != std::string::npos && kept < 4; ++kept) at = id.find(',', at + 1);
  if (at == std::string::npos) return id;
  const size_t more = static_cast<size_t>(std::count(id.begin() + at, id.end(), ',')) + 1;
  return id.substr(0, at) + ",... (" + std::to_string(more) + " more sectors)";
}

void PrintSummary(const properties::ExploreReport& r) {
  std::printf("qcrash explore: workload %s, policy %s, enumerator %s\n", r.workload_name.c_str(),
              r.policy.c_str(), r.enumerator.c_str());
  if (!r.workload_error.empty()) std::printf("  workload stopped: %s\n", r.workload_error.c_str());
  std::printf("  crash points    %llu\n", static_cast<unsigned long long>(r.crash_points));
  std::printf("  states checked  %llu of %llu%s (%.0f states/s, %.2f s)\n",
              static_cast<unsigned long long>(r.states_checked),
              static_cast<unsigned long long>(r.states_total),
              r.budget_exhausted ? ", budget exhausted" : "", r.states_per_second(),
              r.elapsed_seconds);
  std::printf("  recoveries run  %llu (%.0f/s; one per metadata state, properties/dedup.h)\n",
              static_cast<unsigned long long>(r.recoveries_run), r.recoveries_per_second());
  std::printf("  verdicts       ");
  for (int i = 0; i < properties::kVerdictCount; ++i) {
    std::printf(" %s %llu%s", properties::VerdictName(static_cast<properties::Verdict>(i)),
                static_cast<unsigned long long>(r.verdicts[i]),
                i + 1 < properties::kVerdictCount ? "," : "\n");
  }
  std::printf("  violations     ");
  if (r.violations_by_invariant.empty()) std::printf(" none");
  for (const auto& [name, count] : r.violations_by_invariant) {
    std::printf(" %s: %llu states", name.c_str(), static_cast<unsigned long long>(count));
  }
  if (r.violation_classes_dropped > 0) {
    std::printf(" (%llu more invariant x operation classes without a reproducer: --violations)",
                static_cast<unsigned long long>(r.violation_classes_dropped));
  }
  std::printf("\n  flushes         %.2f per guest write, %.2f per allocating write\n",
              r.flushes_per_guest_write(), r.flushes_per_allocation());
}

}  // namespace

// The known-bug catalogue (engine/bug_catalogue.h), as a table or JSON.
int ListBugs(bool json_output) {
  if (json_output) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const engine::KnownBug& bug : engine::KnownBugs()) {
      list.push_back({{"name", bug.name},
                      {"seed", bug.seed},
                      {"breaks", bug.breaks},
                      {"invariant", bug.invariant},
                      {"workload", bug.workload},
                      {"policy", engine::PolicyName(bug.policy)},
                      {"journal", bug.journal_options},
                      {"enumerator", bug.enumerator}});
    }
    std::printf("%s\n", DumpJson(list, 2).c_str());
    return 0;
  }
  for (const engine::KnownBug& bug : engine::KnownBugs()) {
    std::printf("%-23s %-4s builtin:%s --policy %s%s%s --enumerator %s\n  %s\n  seed: %s\n",
                bug.name, bug.invariant, bug.workload, engine::PolicyName(bug.policy),
                *bug.journal_options ? " --journal " : "", bug.journal_options, bug.enumerator,
                bug.breaks, bug.seed);
  }
  return 0;
}

// The command that reruns one cell of the suite on its own.
std::string CellCommand(const properties::SuiteCell& cell, const engine::BugSwitches& bugs) {
  const bool builtin = cell.workload.rfind("random:", 0) != 0;
  // "journal/scan", "unsafe/repair", "lazy/qemu": a policy and its variants.
  std::string policy = cell.policy;
  std::string journal;
  for (size_t slash; (slash = policy.rfind('/')) != std::string::npos;) {
    const std::string variant = policy.substr(slash + 1);
    journal = (variant == "repair"    ? " --recovery-only"
               : variant == "qemu"    ? " --data-ordering qemu"
               : variant == "corrupt" ? ""
                                      : " --journal recovery=scan") +
              journal;
    policy = policy.substr(0, slash);
  }
  const engine::JournalOptions& ring = cell.config.run.open.journal;
  if (builtin && policy == "journal" && ring.size_bytes != engine::JournalOptions{}.size_bytes) {
    journal += " --journal size=" + std::to_string(ring.size_bytes);  // the suite's small ring
  }
  std::string command = "qcrash explore --workload " + std::string(builtin ? "builtin:" : "") +
                        cell.workload + " --policy " + policy + journal;
  if (builtin) command += " --cache-l2 2";
  if (cell.config.run.corruption) {
    command += " --corrupt " +
               std::string(properties::CorruptionName(*cell.config.run.corruption)) + ":" +
               std::to_string(cell.config.run.corruption_choice);
  }
  if (cell.enumerator != "close") {
    std::string enumerator = cell.enumerator;
    if (enumerator.rfind("corrupt:", 0) == 0)
      enumerator = "prefix" + enumerator.substr(enumerator.find('+'));
    std::string nested;
    if (const size_t plus = enumerator.find("+nested:"); plus != std::string::npos) {
      nested = " --nested " + enumerator.substr(plus + 8);
      enumerator = enumerator.substr(0, plus);
    }
    const size_t at = enumerator.find('@');
    command += " --enumerator " + enumerator.substr(0, at);
    if (at != std::string::npos) command += " --shard " + enumerator.substr(at + 1);
    command += nested;
  }
  for (const std::string& bug : engine::EnabledBugNames(bugs)) command += " --bug " + bug;
  return command;
}

void PrintSuiteProgress(const properties::SuiteReport& s, bool tty) {
  static auto last = std::chrono::steady_clock::now() - std::chrono::seconds(10);
  const auto now = std::chrono::steady_clock::now();
  if (!tty && now - last < std::chrono::seconds(3)) return;
  last = now;
  std::fprintf(
      stderr, "%sqcrash explore: %zu cells, %llu states, %llu generated workloads, %zu failing%s",
      tty ? "\r" : "", s.cells.size(), static_cast<unsigned long long>(s.states_checked),
      static_cast<unsigned long long>(s.generated_workloads), s.failed_cells(), tty ? "  " : "\n");
}

// The default exploration: every built-in workload and generated ones under
// every safe policy, a table per workload x policy, exit 1 on any failure.
int RunSuiteMode(Args& args) {
  if (args.enumerator_given || !args.shard.empty() || args.jobs != 1) {
    return Usage(
        "--enumerator, --shard and --jobs need --workload (the suite picks enumerators per "
        "workload)");
  }
  properties::SuiteConfig config;
  if (args.policy_given) config.policies = {args.config.run.open.policy};
  config.bugs = args.config.run.open.faults;
  config.seed = args.seed;
  config.dedup = args.config.dedup;
  config.budget_seconds = args.quick ? 2 : 20;
  if (args.generated >= 0) {
    // A fixed amount of work, the same on any machine: no time budget.
    config.generated_max = static_cast<size_t>(args.generated);
    config.budget_seconds = 0;
  }
  if (args.config.budget_seconds > 0) config.budget_seconds = args.config.budget_seconds;
  if (args.quick) {
    config.skip_costly = true;
    config.builtin_states = 400;
    config.generated_states = 100;
  }
  if (args.config.states_max > 0)
    config.builtin_states = config.generated_states = args.config.states_max;
  // Without a budget the data pass is capped by states alone: a fixed
  // amount of work, as the other cells.
  if (config.budget_seconds <= 0) {
    config.data_states = 2 * config.builtin_states;
    config.generated_data_states = 10 * config.generated_states;
  }
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  auto suite = properties::RunSuite(
      config, [tty](const properties::SuiteReport& s) { PrintSuiteProgress(s, tty); });
  if (tty) std::fprintf(stderr, "\r%100s\r", "");
  if (!suite.ok()) return ReportError("explore", suite.status()) * kExitUsage;

  // One row per workload x policy (generated workloads share a row per policy).
  struct Row {
    uint64_t cells = 0, states = 0, violating = 0, failures = 0;
    std::array<uint64_t, properties::kVerdictCount> verdicts{};
  };
  std::map<std::pair<std::string, std::string>, Row> rows;
  std::vector<std::pair<std::string, std::string>> order;
  for (const properties::SuiteCell& cell : suite->cells) {
    const bool generated = cell.workload.rfind("random:", 0) == 0;
    const std::pair<std::string, std::string> key{generated ? "random" : cell.workload,
                                                  cell.policy};
    if (!rows.count(key)) order.push_back(key);
    Row& row = rows[key];
    ++row.cells;
    row.states += cell.report.states_checked;
    row.violating += cell.report.violating_states;
    row.failures += !cell.failure.empty();
    for (int i = 0; i < properties::kVerdictCount; ++i) row.verdicts[i] += cell.report.verdicts[i];
  }
  std::string bugs;
  for (const std::string& bug : engine::EnabledBugNames(config.bugs)) bugs += " " + bug;
  std::printf(
      "qcrash explore: suite of %llu built-in and %llu generated workloads (seeds %llu..), %zu "
      "cells, "
      "%llu states, %.1f s%s%s\n",
      static_cast<unsigned long long>(suite->builtin_workloads),
      static_cast<unsigned long long>(suite->generated_workloads),
      static_cast<unsigned long long>(config.seed), suite->cells.size(),
      static_cast<unsigned long long>(suite->states_checked), suite->elapsed_seconds,
      suite->budget_exhausted ? " (budget exhausted before the built-ins ended)" : "",
      bugs.empty() ? "" : (", bugs:" + bugs).c_str());
  std::printf("  %-20s %-17s %8s %9s  %s\n", "workload", "policy", "states", "failing",
              "clean/leaks/repaired/stale/loss/unrecoverable");
  for (const auto& key : order) {
    const Row& row = rows[key];
    std::string verdicts;
    for (int i = 0; i < properties::kVerdictCount; ++i)
      verdicts += (i ? "/" : "") + std::to_string(row.verdicts[i]);
    std::printf("  %-20s %-17s %8llu %9llu  %s\n", key.first.c_str(), key.second.c_str(),
                static_cast<unsigned long long>(row.states),
                static_cast<unsigned long long>(row.violating + row.failures), verdicts.c_str());
  }
  nlohmann::json json = {
      {"suite", true},
      {"seed", config.seed},
      {"budget_seconds", config.budget_seconds},
      {"elapsed_seconds", suite->elapsed_seconds},
      {"states_checked", suite->states_checked},
      {"states_covered", suite->states_checked},
      {"recoveries_run", suite->recoveries_run},
      {"states_per_second",
       suite->elapsed_seconds > 0 ? suite->states_checked / suite->elapsed_seconds : 0.0},
      {"recoveries_per_second",
       suite->elapsed_seconds > 0 ? suite->recoveries_run / suite->elapsed_seconds : 0.0},
      {"builtin_workloads", suite->builtin_workloads},
      {"generated_workloads", suite->generated_workloads},
      {"budget_exhausted", suite->budget_exhausted},
      {"first_failure_seconds", suite->first_failure_seconds},
      {"bugs", engine::EnabledBugNames(config.bugs)},
      {"cells", nlohmann::json::array()},
      {"failures", nlohmann::json::array()}};
  for (const properties::SuiteCell& cell : suite->cells) {
    json["cells"].push_back({{"workload", cell.workload},
                             {"policy", cell.policy},
                             {"enumerator", cell.enumerator},
                             {"states_checked", cell.report.states_checked},
                             {"recoveries_run", cell.report.recoveries_run},
                             {"violating_states", cell.report.violating_states},
                             {"elapsed_seconds", cell.report.elapsed_seconds},
                             {"finished_at_seconds", cell.finished_at_seconds},
                             {"failure", cell.failure}});
  }
  std::string base = args.reproducers_dir;
  if (base.empty())
    base = args.report_path.empty() ? "qcrash-reproducers" : args.report_path + ".reproducers";
  constexpr size_t kReproducersMax = 16;
  size_t failures = 0;
  for (properties::SuiteCell& cell : suite->cells) {
    if (!cell.failed()) continue;
    const std::string command = CellCommand(cell, config.bugs);
    nlohmann::json failure = {{"workload", cell.workload},
                              {"policy", cell.policy},
                              {"enumerator", cell.enumerator},
                              {"command", command}};
    if (!cell.failure.empty()) {
      std::printf("  FAIL %s %s: %s\n    rerun: %s\n", cell.workload.c_str(), cell.policy.c_str(),
                  cell.failure.c_str(), command.c_str());
      failure["failure"] = cell.failure;
    }
    if (!cell.report.violations.empty()) {
      properties::FoundViolation v = cell.report.violations.front();
      std::string dir;
      if (failures < kReproducersMax) {
        properties::Minimize(cell.config, v);
        Reproducer r{v.minimized_workload,
                     cell.config.run,
                     cell.config.recovery,
                     v.minimized_state_id,
                     v.invariant,
                     v.minimized_message,
                     engine::EnabledBugNames(config.bugs),
                     v.minimized_raw_findings};
        std::string name = cell.workload + "-" + cell.policy + "-" + cell.enumerator;
        for (char& ch : name) ch = ch == ':' || ch == '/' ? '_' : ch;
        dir = base + "/" + name;
        if (Status written = WriteReproducer(dir, r); !written.ok())
          return ReportError(dir, written) * kExitUsage;
        dir = std::filesystem::absolute(dir).string();
      }
      std::printf("  FAIL %s %s %s: %s at %s: %s\n", cell.workload.c_str(), cell.policy.c_str(),
                  cell.enumerator.c_str(), v.invariant.c_str(), ShortStateId(v.state_id).c_str(),
                  v.message.c_str());
      if (!dir.empty()) {
        std::printf(
            "    minimized: %zu ops, state %s\n    reproducer: %s\n    replay: qcrash replay %s\n",
            v.minimized_workload.ops.size(), ShortStateId(v.minimized_state_id).c_str(),
            dir.c_str(), dir.c_str());
        failure["reproducer"] = dir;
      }
      std::printf("    rerun: %s\n", command.c_str());
      failure.update(
          {{"invariant", v.invariant}, {"state_id", v.state_id}, {"message", v.message}});
    }
    json["failures"].push_back(failure);
    ++failures;
  }
  if (failures > kReproducersMax) {
    std::printf("  (reproducers written for the first %zu of %zu failing cells)\n", kReproducersMax,
                failures);
  }
  std::printf("  failing cells   %zu of %zu", failures, suite->cells.size());
  if (suite->first_failure_seconds >= 0)
    std::printf(" (the first after %.1f s)", suite->first_failure_seconds);
  std::printf("\n");
  if (!WriteReport(args.report_path, json)) {
    return ReportError(args.report_path, Status::IoError("cannot write report")) * kExitUsage;
  }
  if (!args.junit_path.empty()) {
    if (Status written = WriteJunit(args.junit_path, "qcrash explore", JunitCasesFromSuite(json));
        !written.ok())
      return ReportError(args.junit_path, written) * kExitUsage;
  }
  return failures > 0 ? 1 : 0;
}

int RunExplore(int argc, char** argv) {
  if (int rc = RunDeviceFaultIfAsked(argc, argv); rc >= 0) return rc;
  Args args;
  if (int rc = ParseArgs(argc, argv, args); rc != 0) return rc < 0 ? 0 : rc;
  if (args.list_bugs) return ListBugs(args.json_output);
  if (args.workload.empty() && args.qemu) {
    if (!args.junit_path.empty()) return Usage("--junit with --engine qemu needs --workload");
    QemuSuiteArgs suite;
    suite.qemu = args.qemu_options;
    suite.run = args.config.run;
    suite.run.qemu = nullptr;
    if (args.config.states_max > 0) suite.states = args.config.states_max;
    suite.generated = args.generated > 0 ? static_cast<uint64_t>(args.generated) : 0;
    suite.seed = args.seed;
    suite.quick = args.quick;
    suite.report_path = args.report_path;
    suite.reproducers_dir = args.reproducers_dir;
    return RunQemuSuite(suite);
  }
  const bool log_mode = !args.log_path.empty();
  if (args.workload.empty() && !log_mode) return RunSuiteMode(args);
  std::string qemu_version;
  if (log_mode) {
    auto run = properties::RunFromDmLog(args.log_path, args.base_path);
    if (!run.ok()) return ReportError(args.log_path, run.status()) * kExitUsage;
    args.config.workload = run->workload;
    args.config.minimize = false;
    args.config.prepared = std::make_shared<const properties::WorkloadRun>(std::move(run).value());
    auto spec = sim::ParseEnumeratorSpec(ExpandEnumerator(args.enumerator, args.seed) +
                                         (args.shard.empty() ? "" : "@" + args.shard));
    if (!spec.ok()) return Usage(spec.status().message());
    args.config.enumerator = *spec;
  } else {
    if (int rc = Prepare(args); rc != 0) return rc;
  }
  if (args.qemu) {
    auto version = properties::QemuVersion(args.qemu_options.qemu_io);
    if (!version.ok()) return ReportError(args.qemu_options.qemu_io, version.status()) * kExitUsage;
    qemu_version = *version;
    // The workload runs through qemu-io once; every worker explores that log.
    auto run = properties::RunWorkload(args.config.workload, args.config.run);
    if (!run.ok()) return ReportError(args.config.workload.name, run.status()) * kExitUsage;
    args.config.prepared = std::make_shared<const properties::WorkloadRun>(std::move(run).value());
  }
  // The report page's data (properties/report_page.h) needs the run: run it
  // once here, and the explorer (and its workers) explore that run.
  args.config.tally_points = !args.report_path.empty();
  if (!args.report_path.empty() && !args.config.prepared) {
    auto run = properties::RunWorkload(args.config.workload, args.config.run);
    if (!run.ok()) return ReportError(args.config.workload.name, run.status()) * kExitUsage;
    args.config.prepared = std::make_shared<const properties::WorkloadRun>(std::move(run).value());
  }
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  auto report = RunExploreJobs(
      args.config, args.jobs, [tty](const properties::ExploreReport& r) { PrintProgress(r, tty); });
  if (tty) std::fprintf(stderr, "\r%80s\r", "");
  if (!report.ok()) return ReportError("explore", report.status()) * kExitUsage;
  nlohmann::json json = properties::ReportToJson(*report);
  json["seed"] = args.seed;
  json["jobs"] = args.jobs;
  json["sector_bytes"] = args.config.run.sector_bytes;
  json["bugs"] = engine::EnabledBugNames(args.config.run.open.faults);
  json["engine"] = args.qemu ? "qemu" : log_mode ? "log" : "qcrash";
  json["violations_kept"] = args.config.violations_kept;  // report merge caps as we do
  if (args.qemu) {
    json["qemu_version"] = qemu_version;
    json["qemu_cache"] = args.qemu_options.cache;
    json["qemu_opts"] = args.qemu_options.runtime_opts;
  }
  if (!args.report_path.empty() && !args.config.io_errors) {
    json.update(properties::ReportPageJson(*args.config.prepared, *report));
  }
  if (log_mode) {
    json["log"] = args.log_path;
    json["base"] = args.base_path;
    json["log_records"] = args.config.prepared->log->size();
  }
  std::string base = args.reproducers_dir;
  if (base.empty()) {
    base = args.report_path.empty() ? "qcrash-reproducers" : args.report_path + ".reproducers";
  }
  for (size_t i = 0; i < report->violations.size(); ++i) {
    properties::FoundViolation& v = report->violations[i];
    if (log_mode) {
      // No workload to rerun: the reproducer is the crash image itself.
      const std::string dir = base + "/violation-" + std::to_string(i);
      Status written = WriteStateImage(*args.config.prepared, v.state_id, dir + "/image.qcow2");
      if (!written.ok()) return ReportError(dir, written) * kExitUsage;
      json["violations"][i]["reproducer"] = std::filesystem::absolute(dir).string();
      json["violations"][i]["minimized"] = {
          {"ops", 0}, {"state_id", v.state_id}, {"message", v.message}};
      if (!args.report_path.empty()) {
        json["violations"][i]["minimized"]["deviations"] =
            properties::DeviationsJson(*args.config.prepared, v.state_id);
      }
      continue;
    }
    if (args.config.minimize) properties::Minimize(args.config, v);
    Reproducer r{v.minimized_workload,
                 args.config.run,
                 args.config.recovery,
                 v.minimized_state_id,
                 v.invariant,
                 v.minimized_message,
                 engine::EnabledBugNames(args.config.run.open.faults),
                 v.minimized_raw_findings};
    const std::string dir = base + "/violation-" + std::to_string(i);
    Status written = WriteReproducer(dir, r);
    if (!written.ok()) return ReportError(dir, written) * kExitUsage;
    json["violations"][i]["reproducer"] = std::filesystem::absolute(dir).string();
    json["violations"][i]["minimized"] = {{"ops", v.minimized_workload.ops.size()},
                                          {"state_id", v.minimized_state_id},
                                          {"message", v.minimized_message}};
    if (!args.report_path.empty()) {
      // The report page shows how the minimized state differs from latest.
      auto minimized = properties::RunWorkload(v.minimized_workload, args.config.run);
      if (minimized.ok()) {
        json["violations"][i]["minimized"]["deviations"] =
            properties::DeviationsJson(*minimized, v.minimized_state_id);
        json["violations"][i]["minimized"]["raw_findings"] = v.minimized_raw_findings;
      }
    }
  }
  std::vector<std::string> qemu_checks;
  if (args.qemu || log_mode) {
    // The differential verdict: QEMU's own check of each state we call violating.
    qemu_checks = QemuCheckViolations(args.qemu_options.qemu_img, json["violations"]);
    if (args.qemu_check_sample > 0) {
      auto sample = QemuCheckSample(args.config, *args.config.prepared, args.qemu_check_sample,
                                    args.qemu_options.qemu_img);
      if (!sample.ok()) return ReportError("qemu-img check", sample.status()) * kExitUsage;
      json["qemu_img_check_sample"] = *sample;
    }
  }
  if (args.qemu) {
    std::printf("qcrash explore: engine QEMU %s (qemu-io -t %s%s%s)\n", qemu_version.c_str(),
                args.qemu_options.cache.c_str(), args.qemu_options.runtime_opts.empty() ? "" : ", ",
                args.qemu_options.runtime_opts.c_str());
  }
  if (log_mode) {
    std::printf("qcrash explore: log %s over %s: %zu records (structural invariants only)\n",
                args.log_path.c_str(), args.base_path.c_str(), args.config.prepared->log->size());
  }
  PrintSummary(*report);
  if (json.contains("qemu_img_check_sample")) {
    const nlohmann::json& s = json["qemu_img_check_sample"];
    std::printf(
        "  qemu-img check  %llu sampled states: %llu corrupt by QEMU, %llu by qcrash, %llu "
        "disagree\n",
        s.value("states", 0ull), s.value("qemu_corrupt", 0ull), s.value("qcrash_corrupt", 0ull),
        s.value("disagree", 0ull));
  }
  for (size_t i = 0; i < report->violations.size(); ++i) {
    const properties::FoundViolation& v = report->violations[i];
    std::printf(
        "  violation %zu: %s during %s at %s: %s\n    minimized: %zu ops, state %s\n    "
        "reproducer: %s\n",
        i, v.invariant.c_str(), v.op_class.c_str(), ShortStateId(v.state_id).c_str(),
        v.message.c_str(), v.minimized_workload.ops.size(),
        ShortStateId(v.minimized_state_id).c_str(),
        json["violations"][i]["reproducer"].get<std::string>().c_str());
    if (i < qemu_checks.size() && !qemu_checks[i].empty())
      std::printf("    %s\n", qemu_checks[i].c_str());
    if (!args.report_path.empty() && !log_mode) {
      std::printf("    replay: qcrash replay %s#%zu\n", args.report_path.c_str(), i);
    }
  }
  if (!WriteReport(args.report_path, json)) {
    return ReportError(args.report_path, Status::IoError("cannot write report")) * kExitUsage;
  }
  if (!args.junit_path.empty()) {
    if (Status written = WriteJunit(args.junit_path, "qcrash explore",
                                    {JunitCaseFromReport(json, log_mode ? "" : args.report_path)});
        !written.ok())
      return ReportError(args.junit_path, written) * kExitUsage;
  }
  // A workload an engine error stopped (a read that returned wrong data
  // included) fails as a violation does.
  return report->violating_states > 0 || !report->workload_error.empty() ? 1 : 0;
}

}  // namespace qcrash::cli
