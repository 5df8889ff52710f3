// The qcrash command: a dispatch table from subcommand names to the Run*
// functions, one per cli/<name>_command.cc.
#include <cstdio>
#include <cstring>
#include <string_view>

// To add a command: write cli/<name>_command.cc defining
// `int qcrash::cli::Run<Name>(int argc, char** argv)` (argv[0] is the command
// name; return the exit code) and add one X(...) line below. CMake picks up
// every cli/*_command.cc by itself.
#define QCRASH_CLI_COMMANDS(X)                                                                     \
  X("create", RunCreate, "create a qcow2 image (qemu-img create)")                                 \
  X("info", RunInfo, "show an image's header (qemu-img info)")                                     \
  X("map", RunMap, "show where guest data lives (qemu-img map)")                                   \
  X("convert", RunConvert, "copy the guest view to raw or qcow2 (qemu-img convert)")               \
  X("io", RunIo, "run qemu-io-like commands on an image (qemu-io -c)")                             \
  X("check", RunCheck, "check and repair an image (qemu-img check)")                               \
  X("explore", RunExplore, "enumerate crash states of a workload and check each one")              \
  X("replay", RunReplay, "rebuild and re-check one crash state from a report")                     \
  X("snapshot", RunSnapshot,                                                                       \
    "create, apply, delete or list internal snapshots (qemu-img snapshot)")                        \
  X("bitmap", RunBitmap, "add, remove, clear, enable, disable or merge bitmaps (qemu-img bitmap)") \
  X("compare", RunCompare, "compare the guest views of two images (qemu-img compare)")             \
  X("measure", RunMeasure, "the file size a new or converted image needs (qemu-img measure)")      \
  X("amend", RunAmend, "change compat, refcount_bits, lazy_refcounts or size (qemu-img amend)")    \
  X("resize", RunResize, "grow or shrink an image (qemu-img resize)")                              \
  X("rebase", RunRebase, "change an image's backing file (qemu-img rebase)")                       \
  X("commit", RunCommit,                                                                           \
    "write an image's data into its backing file, then empty it (qemu-img commit)")                \
  X("report", RunReport, "render an explore report as one HTML page; report merge: add shards up")

namespace qcrash::cli {

#define QCRASH_CLI_DECLARE(name, function, help) int function(int argc, char** argv);
QCRASH_CLI_COMMANDS(QCRASH_CLI_DECLARE)
#undef QCRASH_CLI_DECLARE

namespace {

struct Command {
  std::string_view name;
  int (*run)(int argc, char** argv);
  const char* help;
};

constexpr Command kCommands[] = {
#define QCRASH_CLI_ENTRY(name, function, help) {name, &function, help},
    QCRASH_CLI_COMMANDS(QCRASH_CLI_ENTRY)
#undef QCRASH_CLI_ENTRY
};

void PrintUsage(std::FILE* out) {
  std::fprintf(out, "usage: qcrash COMMAND [options] ...\n\ncommands:\n");
  for (const Command& command : kCommands) {
    std::fprintf(out, "  %-10.*s %s\n", static_cast<int>(command.name.size()), command.name.data(),
                 command.help);
  }
  std::fprintf(out, "\n'qcrash COMMAND --help' shows a command's options.\n");
}

}  // namespace
}  // namespace qcrash::cli

int main(int argc, char** argv) {
  using qcrash::cli::kCommands;
  if (argc < 2) {
    qcrash::cli::PrintUsage(stderr);
    return 1;
  }
  const std::string_view name = argv[1];
  if (name == "-h" || name == "--help" || name == "help") {
    qcrash::cli::PrintUsage(stdout);
    return 0;
  }
  if (name == "-V" || name == "--version") {  // as qemu-img
    std::printf("qcrash version " QCRASH_VERSION
                "\nA crash-consistency lab for qcow2; reads and writes the images QEMU's "
                "qemu-img does.\n");
    return 0;
  }
  for (const auto& command : kCommands) {
    if (command.name == name) return command.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "qcrash: unknown command '%s'\n", argv[1]);
  qcrash::cli::PrintUsage(stderr);
  return 1;
}
