// `qcrash rebase [-f qcow2] [-u] [-q] [-p] -b BACKING [-F raw|qcow2] FILE`:
// qemu-img rebase over Image::Rebase (engine/rebase.cc). Safe mode copies
// what the new backing file would read differently into the image before
// the header names it; -u only rewrites the name. As qemu-img, the new
// name is stored as given and resolved relative to the image's directory,
// -b "" makes the image standalone, and a new backing file needs -F.
#include <getopt.h>

#include <cstdio>
#include <optional>
#include <string>

#include "cli/cli_common.h"

namespace qcrash::cli {
namespace {

// OpenImage's steps without a backing opener: reads of unallocated
// clusters fail, and nothing reads them (unsafe mode copies nothing).
Result<OpenedImage> OpenWithoutBacking(const std::string& path) {
  QCRASH_RETURN_IF_ERROR(ReadHeaderOf(path).status());
  OpenedImage opened;
  QCRASH_ASSIGN_OR_RETURN(opened.lock, LockImage(path, false, false));
  QCRASH_ASSIGN_OR_RETURN(opened.device, FileDevice::Open(path, FileDevice::Mode::kReadWrite));
  engine::OpenOptions options;
  InstallDataFileOpener(path, options);
  QCRASH_ASSIGN_OR_RETURN(opened.image, engine::Image::Open(*opened.device, options));
  return opened;
}

}  // namespace

int RunRebase(int argc, char** argv) {
  constexpr const char* kUsage =
      "usage: qcrash rebase [-f qcow2] [-u] [-q] [-p] -b BACKING [-F raw|qcow2] FILE\n";
  static const option kLong[] = {
      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0},
  };
  ResetGetopt();
  std::optional<std::string> backing;
  std::optional<std::string> format;
  bool unsafe = false, quiet = false, progress = false;
  engine::OpenOptions options;
  int c;
  while ((c = getopt_long(argc, argv, "f:b:F:uqph", kLong, nullptr)) != -1) {
    switch (c) {
      case 'f':
        if (std::string(optarg) != "qcow2") return ReportUsage("rebase: only qcow2 images");
        break;
      case 'b':
        backing = optarg;
        break;
      case 'F':
        format = optarg;
        break;
      case 'u':
        unsafe = true;
        break;
      case 'q':
        quiet = true;
        break;
      case 'p':
        progress = true;
        break;
      case 'h':
      default:
        return HelpOrBadOption(c, kUsage);
    }
  }
  if (optind + 1 != argc) return ReportUsage("Expecting one image file name");
  if (!unsafe && !backing)
    return ReportUsage("Must specify backing file (-b) or use unsafe mode (-u)");
  const std::string path = argv[optind];
  const std::string name = backing.value_or("");
  if (format && *format != "raw" && *format != "qcow2") {
    return ReportUsage("Could not open new backing file '" + name + "': Unknown driver '" +
                       *format + "'");
  }
  if (!name.empty() && !format) {
    // QEMU 7.2 no longer probes the new file's format for the header.
    return ReportUsage("Could not change the backing file to '" + name +
                       "': backing format must be specified");
  }
  // The new name is resolved relative to the image itself: an opener of
  // its own (the image's opener has moved on along the old chain).
  engine::OpenOptions fresh;
  InstallBackingOpener(path, fresh);
  Result<OpenedImage> opened = Status::Ok();
  if (unsafe) {
    // As qemu-img -u: the old backing file is not opened (it may be gone;
    // that is often why one rebases unsafely).
    opened = OpenWithoutBacking(path);
  } else {
    opened = OpenImage(path, options);
  }
  if (!opened.ok()) return ReportError(path, opened.status());
  engine::Image& image = *opened->image;
  const Status done =
      image.Rebase(name, name.empty() ? std::nullopt : format, unsafe, fresh.open_backing);
  if (!done.ok()) return ReportError(path, done);
  if (Status closed = image.Close(); !closed.ok()) return ReportError(path, closed);
  // qemu-img's progress line, redrawn in place (\r); the copy is not timed.
  if (progress && !quiet) std::printf("    (0.00/100%%)\r    (100.00/100%%)\r\n");
  return 0;
}

}  // namespace qcrash::cli
