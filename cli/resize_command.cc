// `qcrash resize [--shrink] [--preallocation=MODE] [-f qcow2] [-q] FILE [+|-]SIZE`:
// qemu-img resize over Image::Truncate (engine/image.cc: a shrink drops the
// tail durably before the header names the smaller size; a growth relocates
// the L1 table first when it must grow, R6). As qemu-img, the last argument
// is the size, taken before the options are parsed, so that "-1M" is a
// relative size and not an option.
#include <getopt.h>

#include <cctype>
#include <cstdio>
#include <string>

#include "cli/cli_common.h"

namespace qcrash::cli {

int RunResize(int argc, char** argv) {
  constexpr const char* kUsage =
      "usage: qcrash resize [--shrink] [--preallocation=off|metadata|falloc|full] [-f qcow2] [-q]\n"
      "                     FILE [+|-]SIZE\n";
  enum : int { kShrink = 256, kPreallocation };
  static const option kLong[] = {
      {"shrink", no_argument, nullptr, kShrink},
      {"preallocation", required_argument, nullptr, kPreallocation},
      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0},
  };
  if (argc == 2 && (std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help")) {
    std::printf("%s", kUsage);
    return 0;
  }
  if (argc < 3) return ReportUsage("Not enough arguments");
  // Why: a negative relative size ("-1M") would otherwise be read as options.
  const std::string size_text = argv[--argc];
  ResetGetopt();
  bool shrink = false, quiet = false;
  engine::Preallocation preallocation = engine::Preallocation::kOff;
  engine::OpenOptions options;
  int c;
  while ((c = getopt_long(argc, argv, "f:qh", kLong, nullptr)) != -1) {
    switch (c) {
      case kShrink:
        shrink = true;
        break;
      case kPreallocation: {
        auto mode = engine::ParsePreallocation(optarg);
        if (!mode.ok())
          return ReportUsage(std::string("Invalid preallocation mode '") + optarg + "'");
        preallocation = *mode;
        break;
      }
      case 'f':
        if (std::string(optarg) != "qcow2") return ReportUsage("resize: only qcow2 images");
        break;
      case 'q':
        quiet = true;
        break;
      case 'h':
      default:
        return HelpOrBadOption(c, kUsage);
    }
  }
  if (optind + 1 != argc) return ReportUsage("Expecting image file name and size");
  const std::string path = argv[optind];

  int sign = 0;
  std::string_view magnitude = size_text;
  if (!magnitude.empty() && (magnitude[0] == '+' || magnitude[0] == '-')) {
    sign = magnitude[0] == '+' ? 1 : -1;
    magnitude.remove_prefix(1);
  }
  auto amount = ParseSize(magnitude);
  if (!amount.ok()) {
    return ReportUsage(
        "Parameter 'size' expects a non-negative number below 2^64\n"
        "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
        "and exabytes, respectively.");
  }

  auto opened = OpenImage(path, options);
  if (!opened.ok()) return ReportError(path, opened.status());
  engine::Image& image = *opened->image;
  const uint64_t current = image.header().size_bytes;
  // qemu-img computes the size as a signed 64-bit number: anything that is
  // not above zero there (an overflow included) is refused alike.
  constexpr uint64_t kSignedMax = uint64_t{1} << 63;
  uint64_t size = *amount;
  bool positive = *amount < kSignedMax;
  if (sign > 0) {
    positive = positive && current + *amount < kSignedMax;
    size = current + *amount;
  } else if (sign < 0) {
    positive = positive && *amount < current;
    size = current - *amount;
  }
  if (!positive || size == 0) return ReportUsage("New image size must be positive");
  if (size < current && preallocation != engine::Preallocation::kOff)
    return ReportUsage("Preallocation can only be used for growing images");
  if (size < current && !shrink) {
    std::fprintf(stderr,
                 "qcrash: Use the --shrink option to perform a shrink operation.\n"
                 "qcrash: warning: Shrinking an image will delete all data beyond the shrunken "
                 "image's end. Before performing such an operation, make sure there is no "
                 "important data there.\n");
    return 1;
  }
  if (size % 512 != 0) return ReportUsage("The new size must be a multiple of 512");
  if (Status done = image.Truncate(size, preallocation); !done.ok())
    return ReportError(path, done.WithContext("Error resizing image"));
  if (Status closed = image.Close(); !closed.ok()) return ReportError(path, closed);
  if (!quiet) std::printf("Image resized.\n");
  return 0;
}

}  // namespace qcrash::cli
