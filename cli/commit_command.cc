// `qcrash commit [-f qcow2] [-q] [-p] [-d] [-b BASE] FILE`: qemu-img commit
// (engine/commit.cc): the image's data written into its backing file (or
// BASE further down the chain), which is flushed before the image is
// emptied (R13). Its messages, progress line and exit codes are qemu-img's.
#include <getopt.h>

#include <cstdio>
#include <string>

#include "cli/cli_common.h"
#include "cli/destination.h"

namespace qcrash::cli {

namespace {

constexpr const char* kUsage =
    "usage: qcrash commit [-f qcow2] [-q] [-p] [-d] [-b BASE] [--policy P] [--bug NAME] FILE\n";

// Opens the backing chain read-write: the base is written, and a qcow2 base
// is reopened read-write over the device this opener gives. Names resolve
// as InstallBackingOpener's do (relative to the image naming them).
void InstallWritableBackingOpener(const std::string& image_path, engine::OpenOptions& options) {
  auto base = std::make_shared<std::string>(image_path);
  options.open_backing = [base](const std::string& name) -> Result<std::unique_ptr<BlockDevice>> {
    const std::string resolved = PathCombine(*base, name);
    auto device = FileDevice::Open(resolved, FileDevice::Mode::kReadWrite);
    if (!device.ok()) return device.status();
    *base = resolved;
    return std::unique_ptr<BlockDevice>(std::move(device).value());
  };
}

}  // namespace

int RunCommit(int argc, char** argv) {
  static const std::vector<option> kLong =
      WithEngineLongOptions({{"help", no_argument, nullptr, 'h'}});
  ResetGetopt();
  engine::OpenOptions options;
  engine::Image::CommitOptions commit;
  bool quiet = false, progress = false;
  std::string base_name;
  int opt;
  int index = 0;
  while ((opt = getopt_long(argc, argv, "hf:qpdb:", kLong.data(), &index)) != -1) {
    switch (opt) {
      case 'h':
        std::fputs(kUsage, stdout);
        return 0;
      case 'f':
        if (std::string(optarg) != "qcow2")
          return ReportUsage("commit: only -f qcow2 is supported");
        break;
      case 'q':
        quiet = true;
        break;
      case 'p':
        progress = true;
        break;
      case 'd':
        commit.keep_top = true;
        break;
      case 'b':
        base_name = optarg;
        // As qemu-img: -b implies -d, since the images between the top and
        // a base further down would read garbage once emptied above it.
        commit.keep_top = true;
        break;
      case 1:
        if (!ApplyEngineOption(kLong[index].name, optarg, options)) return 1;
        break;
      default:
        std::fputs(kUsage, stderr);
        return 1;
    }
  }
  if (argc - optind != 1) return ReportUsage("Expecting one image file name");
  const std::string path = argv[optind];
  const std::vector<ChainFile> chain = BackingChain(path);
  if (!base_name.empty()) {
    const std::optional<FileId> wanted = IdOf(base_name);
    commit.base_depth = 0;
    for (size_t depth = 1; depth < chain.size() && commit.base_depth == 0; ++depth) {
      if (chain[depth].name == base_name || (wanted && IdOf(chain[depth].name) == wanted)) {
        commit.base_depth = static_cast<uint32_t>(depth);
      }
    }
    if (commit.base_depth == 0) {
      return ReportUsage("Did not find '" + base_name + "' in the backing chain of '" + path + "'");
    }
  }
  InstallWritableBackingOpener(path, options);
  auto opened = OpenImage(path, options);
  if (!opened.ok()) return ReportError(path, opened.status());
  // The base is written: QEMU's write lock on it, as on the image.
  std::unique_ptr<engine::ImageLock> base_lock;
  if (commit.base_depth < chain.size()) {
    auto locked = LockImage(chain[commit.base_depth].name, false, false);
    if (!locked.ok()) return ReportError(chain[commit.base_depth].name, locked.status());
    base_lock = std::move(locked).value();
  }
  if (progress && !quiet) {
    commit.progress = [](double percent) {
      std::printf("    (%.2f/100%%)\r", percent);
      std::fflush(stdout);
    };
  }
  Status done = opened->image->Commit(commit);
  if (done.ok()) done = opened->image->Close();
  if (progress && !quiet) std::printf("\n");
  if (!done.ok()) return ReportError(path, done);
  if (!quiet) std::printf("Image committed.\n");
  return 0;
}

}  // namespace qcrash::cli
