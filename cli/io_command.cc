// `qcrash io`: runs qemu-io-like commands (-c "write -P 0xab 0 4k", read,
// discard, flush, truncate) on one image and prints qemu-io's report lines.
// All commands are parsed before the image opens, so a typo writes nothing.
#include <getopt.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/cli_common.h"
#include "properties/json.h"

namespace qcrash::cli {
namespace {

constexpr const char* kUsage =
    "usage: qcrash io [-r] [-f qcow2] [--policy P] [--data-ordering strict|qemu]\n"
    "                 [--cache-l2 N] [--cache-refcount N] [--bug SWITCH]... [--stats]\n"
    "                 [-c CMD]... FILE\n"
    "  CMD: write [-P pattern] [-c | -z [-u]] [-q] OFF LEN | read [-P pattern] [-q] OFF LEN |\n"
    "       discard [-q] OFF LEN | flush | truncate SIZE\n";

enum class Op : uint8_t {
  kWrite,
  kWriteCompressed,
  kWriteZeroes,
  kRead,
  kDiscard,
  kFlush,
  kTruncate
};

struct IoCommand {
  Op op = Op::kFlush;
  uint64_t offset = 0;
  uint64_t length = 0;  // truncate: the new size
  int pattern = -1;     // -1: none (read does not verify; write uses 0xcd)
  bool unmap = false;
  bool quiet = false;
};

std::vector<std::string> SplitWords(const std::string& line) {
  std::vector<std::string> words;
  size_t at = 0;
  while (at < line.size()) {
    while (at < line.size() && std::isspace(static_cast<unsigned char>(line[at]))) ++at;
    const size_t start = at;
    while (at < line.size() && !std::isspace(static_cast<unsigned char>(line[at]))) ++at;
    if (at > start) words.push_back(line.substr(start, at - start));
  }
  return words;
}

Result<int> ParsePattern(const std::string& text) {
  char* end = nullptr;
  const long pattern = std::strtol(text.c_str(), &end, 0);
  if (text.empty() || *end != '\0' || pattern < 0 || pattern > 255) {
    return Status::InvalidArgument(text + " is not a valid pattern byte");
  }
  return static_cast<int>(pattern);
}

// Parses "write -P 0xab 0 4k" and friends, with qemu-io's flags and messages.
Result<IoCommand> ParseIoCommand(const std::string& line) {
  const std::vector<std::string> words = SplitWords(line);
  if (words.empty()) return Status::InvalidArgument("empty command");
  const std::string& name = words[0];
  IoCommand command;
  bool zero = false;
  bool compressed = false;
  std::vector<std::string> positional;
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string& word = words[i];
    if (word.size() < 2 || word[0] != '-') {
      positional.push_back(word);
    } else if (word == "-P" && i + 1 < words.size()) {
      QCRASH_ASSIGN_OR_RETURN(command.pattern, ParsePattern(words[++i]));
    } else if (word == "-z") {
      zero = true;
    } else if (word == "-c") {
      compressed = true;
    } else if (word == "-u") {
      command.unmap = true;
    } else if (word == "-q") {
      command.quiet = true;
    } else {
      return Status::InvalidArgument("unknown option " + word + " in '" + line + "'");
    }
  }
  const auto want = [&](size_t count) -> Status {
    if (positional.size() != count) {
      return Status::InvalidArgument("'" + line + "' takes " + std::to_string(count) +
                                     " argument(s)");
    }
    return Status::Ok();
  };
  if (name == "write" || name == "w") {
    if (zero && command.pattern >= 0)
      return Status::InvalidArgument("-z and -P cannot be specified at the same time");
    if (command.unmap && !zero) return Status::InvalidArgument("-u requires -z to be specified");
    if (zero && compressed)
      return Status::InvalidArgument("-z and -c cannot be specified at the same time");
    command.op = zero ? Op::kWriteZeroes : compressed ? Op::kWriteCompressed : Op::kWrite;
  } else if (name == "read" || name == "r") {
    command.op = Op::kRead;
  } else if (name == "discard" || name == "d") {
    command.op = Op::kDiscard;
  } else if (name == "flush" || name == "f") {
    command.op = Op::kFlush;
    QCRASH_RETURN_IF_ERROR(want(0));
    return command;
  } else if (name == "truncate" || name == "t") {
    command.op = Op::kTruncate;
    QCRASH_RETURN_IF_ERROR(want(1));
    QCRASH_ASSIGN_OR_RETURN(command.length, ParseSize(positional[0]));
    return command;
  } else {
    return Status::InvalidArgument("command '" + name + "' not found");
  }
  if ((zero || command.unmap) && command.op != Op::kWriteZeroes) {
    return Status::InvalidArgument("-z/-u only apply to write");
  }
  if (compressed && command.op != Op::kWriteCompressed) {
    return Status::InvalidArgument("-c only applies to write");
  }
  QCRASH_RETURN_IF_ERROR(want(2));
  QCRASH_ASSIGN_OR_RETURN(command.offset, ParseSize(positional[0]));
  QCRASH_ASSIGN_OR_RETURN(command.length, ParseSize(positional[1]));
  return command;
}

// qemu-io's cvtstr: "4 KiB", "1.503 MiB", "512 bytes".
std::string CvtStr(double value) {
  static const struct {
    double scale;
    const char* suffix;
  } kUnits[] = {
      {1152921504606846976.0, " EiB"}, {1125899906842624.0, " PiB"}, {1099511627776.0, " TiB"},
      {1073741824.0, " GiB"},          {1048576.0, " MiB"},          {1024.0, " KiB"}};
  char buffer[64];
  const char* suffix = " bytes";
  std::snprintf(buffer, sizeof buffer, "%f", value);
  for (const auto& unit : kUnits) {
    if (value >= unit.scale) {
      std::snprintf(buffer, sizeof buffer, "%.3f", value / unit.scale);
      suffix = unit.suffix;
      break;
    }
  }
  std::string text = buffer;
  const size_t trim = text.find(".000");
  if (trim != std::string::npos) text.resize(trim);
  return text + suffix;
}

void PrintReport(const char* verb, const IoCommand& command, double seconds) {
  if (command.quiet) return;
  const double safe = seconds > 0 ? seconds : 1e-9;
  const auto bytes = static_cast<unsigned long long>(command.length);
  std::printf("%s %llu/%llu bytes at offset %llu\n", verb, bytes, bytes,
              static_cast<unsigned long long>(command.offset));
  std::printf("%s, 1 ops; %05.2f sec (%s/sec and %.4f ops/sec)\n",
              CvtStr(static_cast<double>(command.length)).c_str(), seconds,
              CvtStr(static_cast<double>(command.length) / safe).c_str(), 1.0 / safe);
}

// Runs one command; returns false (after printing why) when it failed.
bool RunIoCommand(engine::Image& image, const IoCommand& command, std::vector<uint8_t>& buffer) {
  const auto start = std::chrono::steady_clock::now();
  Status status;
  const char* verb = "wrote";
  const char* failure = "write failed";
  bool pattern_ok = true;
  switch (command.op) {
    case Op::kWrite:
      buffer.assign(command.length,
                    static_cast<uint8_t>(command.pattern >= 0 ? command.pattern : 0xcd));
      status = image.Write(command.offset, buffer);
      break;
    case Op::kWriteCompressed:
      buffer.assign(command.length,
                    static_cast<uint8_t>(command.pattern >= 0 ? command.pattern : 0xcd));
      status = image.WriteCompressed(command.offset, buffer);
      break;
    case Op::kWriteZeroes:
      status = image.WriteZeroes(command.offset, command.length, command.unmap);
      break;
    case Op::kRead:
      verb = "read";
      failure = "read failed";
      buffer.resize(command.length);
      status = image.Read(command.offset, buffer);
      if (status.ok() && command.pattern >= 0) {
        const auto expected = static_cast<uint8_t>(command.pattern);
        for (uint8_t byte : buffer) pattern_ok &= byte == expected;
      }
      break;
    case Op::kDiscard:
      verb = "discard";
      failure = "discard failed";
      status = image.Discard(command.offset, command.length);
      break;
    case Op::kFlush:
      status = image.Flush();
      if (!status.ok()) std::printf("flush failed: %s\n", status.ToString().c_str());
      return status.ok();
    case Op::kTruncate:
      status = image.Truncate(command.length, engine::Preallocation::kOff);
      if (!status.ok()) std::printf("truncate: %s\n", status.ToString().c_str());
      return status.ok();
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  if (!status.ok()) {
    std::printf("%s: %s\n", failure, status.ToString().c_str());
    return false;
  }
  if (!pattern_ok) {
    std::printf("Pattern verification failed at offset %llu, %llu bytes\n",
                static_cast<unsigned long long>(command.offset),
                static_cast<unsigned long long>(command.length));
  }
  PrintReport(verb, command, elapsed.count());
  return pattern_ok;
}

struct IoArgs {
  engine::OpenOptions options;
  bool force_share = false;
  bool stats = false;
  std::vector<std::string> lines;
  std::string file;
};

int ParseIoArgs(int argc, char** argv, IoArgs& args) {
  static const std::vector<option> kLong =
      WithEngineLongOptions({{"help", no_argument, nullptr, 'h'},
                             {"cmd", required_argument, nullptr, 'c'},
                             {"read-only", no_argument, nullptr, 'r'},
                             {"stats", no_argument, nullptr, 2}});
  ResetGetopt();
  int opt;
  int index = 0;
  while ((opt = getopt_long(argc, argv, "hrUf:c:", kLong.data(), &index)) != -1) {
    switch (opt) {
      case 'h':
        std::fputs(kUsage, stdout);
        return -1;
      case 'r':
        args.options.read_only = true;
        break;
      case 'U':
        args.force_share = true;
        break;
      case 'f':
        if (std::string(optarg) != "qcow2") return ReportUsage("io: only -f qcow2 is supported");
        break;
      case 'c':
        args.lines.emplace_back(optarg);
        break;
      case 1:
        if (!ApplyEngineOption(kLong[index].name, optarg, args.options)) return 1;
        break;
      case 2:
        args.stats = true;
        break;
      default:
        std::fputs(kUsage, stderr);
        return 1;
    }
  }
  if (argc - optind != 1) {
    std::fputs(kUsage, stderr);
    return 1;
  }
  args.file = argv[optind];
  if (args.force_share && !args.options.read_only) {
    return ReportUsage("io: -U (force-share) can only be used with read-only images (-r)");
  }
  return 0;
}

// "stats: {...}": what the engine did, for flushes per guest write and friends.
void PrintStats(const engine::EngineStats& stats) {
  const nlohmann::ordered_json json = {{"guest_writes", stats.guest_writes},
                                       {"guest_flushes", stats.guest_flushes},
                                       {"device_flushes", stats.device_flushes},
                                       {"metadata_writes", stats.metadata_writes},
                                       {"data_writes", stats.data_writes},
                                       {"clusters_allocated", stats.clusters_allocated},
                                       {"eviction_writes", stats.eviction_writes},
                                       {"flushes_by_rule", properties::FlushesByRuleToJson(stats)},
                                       {"transaction_barriers", stats.transaction_barriers}};
  std::printf("stats: %s\n", DumpJson(json).c_str());
}

}  // namespace

int RunIo(int argc, char** argv) {
  IoArgs args;
  if (const int code = ParseIoArgs(argc, argv, args); code != 0) return code < 0 ? 0 : code;
  std::vector<IoCommand> commands;
  commands.reserve(args.lines.size());
  for (const std::string& line : args.lines) {
    auto command = ParseIoCommand(line);
    if (!command.ok()) return ReportError(args.file, command.status());
    commands.push_back(*command);
  }
  auto opened = OpenImage(args.file, args.options, args.force_share);
  if (!opened.ok()) return ReportError(args.file, opened.status());
  engine::Image& image = *opened->image;
  std::vector<uint8_t> buffer;
  bool all_ok = true;
  for (const IoCommand& command : commands) all_ok &= RunIoCommand(image, command, buffer);
  if (!image.read_only()) {
    if (const Status status = image.Close(); !status.ok()) return ReportError(args.file, status);
  }
  if (args.stats) PrintStats(image.stats());
  return all_ok ? 0 : 1;
}

}  // namespace qcrash::cli
