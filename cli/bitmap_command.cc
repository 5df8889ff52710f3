// `qcrash bitmap (--add|--remove|--clear|--enable|--disable|--merge SRC)...
// [-g GRAN] FILE NAME`: qemu-img bitmap's operations on persistent dirty
// bitmaps (engine/bitmaps.cc), applied in the order given, then stored by
// one close. A failed operation writes nothing: the image is not closed,
// so what the operations before it did in memory is dropped (the image is
// opened read-write, but nothing reaches the disk before the close).
#include <getopt.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cli/cli_common.h"

namespace qcrash::cli {
namespace {

struct BitmapAction {
  std::string op;      // add, remove, clear, enable, disable, merge
  std::string source;  // merge
};

Status RunAction(engine::Image& image, const BitmapAction& action, const std::string& name,
                 uint64_t granularity, bool add_disabled) {
  if (action.op == "add") return image.AddBitmap(name, granularity, !add_disabled);
  if (action.op == "remove") return image.RemoveBitmap(name);
  if (action.op == "clear") return image.ClearBitmap(name);
  if (action.op == "enable") return image.EnableBitmap(name, true);
  if (action.op == "disable") return image.EnableBitmap(name, false);
  return image.MergeBitmap(name, action.source);
}

}  // namespace

int RunBitmap(int argc, char** argv) {
  constexpr const char* kUsage =
      "usage: qcrash bitmap (--add [-g GRANULARITY] [--disable] | --remove | --clear |\n"
      "                      --enable | --disable | --merge SOURCE)... [-f qcow2] FILE BITMAP\n";
  enum : int { kAdd = 256, kRemove, kClear, kEnable, kDisable, kMerge };
  static const option kLong[] = {
      {"add", no_argument, nullptr, kAdd},         {"remove", no_argument, nullptr, kRemove},
      {"clear", no_argument, nullptr, kClear},     {"enable", no_argument, nullptr, kEnable},
      {"disable", no_argument, nullptr, kDisable}, {"merge", required_argument, nullptr, kMerge},
      {"help", no_argument, nullptr, 'h'},         {nullptr, 0, nullptr, 0},
  };
  ResetGetopt();
  std::vector<BitmapAction> actions;
  uint64_t granularity = 0;
  bool add_disabled = false;
  int c;
  while ((c = getopt_long(argc, argv, "g:f:b:F:qh", kLong, nullptr)) != -1) {
    switch (c) {
      case kAdd:
        actions.push_back({"add", ""});
        break;
      case kRemove:
        actions.push_back({"remove", ""});
        break;
      case kClear:
        actions.push_back({"clear", ""});
        break;
      case kEnable:
        actions.push_back({"enable", ""});
        break;
      case kDisable:
        // As in qemu-img: with --add, the new bitmap starts disabled.
        add_disabled = true;
        actions.push_back({"disable", ""});
        break;
      case kMerge:
        actions.push_back({"merge", optarg});
        break;
      case 'g': {
        auto size = ParseSize(optarg);
        if (!size.ok() || *size == 0) return ReportUsage("Invalid granularity specified");
        granularity = *size;
        break;
      }
      case 'f':
        if (std::string(optarg) != "qcow2") return ReportUsage("bitmap: only qcow2 images");
        break;
      case 'b':
      case 'F':
        return ReportUsage("bitmap: merging from another file (-b) is not supported");
      case 'q':
        break;
      case 'h':
      default:
        return HelpOrBadOption(c, kUsage);
    }
  }
  if (actions.empty())
    return ReportUsage(
        "Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
  if (granularity != 0 && std::none_of(actions.begin(), actions.end(),
                                       [](const BitmapAction& a) { return a.op == "add"; }))
    return ReportUsage("granularity only supported with --add");
  if (optind + 2 != argc) {
    std::fprintf(stderr, "%s", kUsage);
    return 1;
  }
  const std::string path = argv[optind];
  const std::string name = argv[optind + 1];
  const bool adding = std::any_of(actions.begin(), actions.end(),
                                  [](const BitmapAction& a) { return a.op == "add"; });
  if (adding && add_disabled) {
    // --add --disable: the disable is the add's option, not an action.
    std::erase_if(actions, [](const BitmapAction& a) { return a.op == "disable"; });
  }
  auto opened = OpenImage(path, engine::OpenOptions{}, false);
  if (!opened.ok()) return ReportError(path, opened.status());
  engine::Image& image = *opened->image;
  for (const BitmapAction& action : actions) {
    const Status done = RunAction(image, action, name, granularity, add_disabled);
    if (!done.ok()) {
      return ReportError(
          path, done.WithContext("Operation " + action.op + " on bitmap " + name + " failed"));
    }
  }
  if (Status closed = image.Close(); !closed.ok()) return ReportError(path, closed);
  return 0;
}

}  // namespace qcrash::cli
