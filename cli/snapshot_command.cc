// `qcrash snapshot -l|-c|-a|-d [NAME] FILE`: qemu-img snapshot's list,
// create, apply and delete (engine/snapshots.cc), with its list format, its
// messages and its exit codes.
#include <getopt.h>

#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <string>

#include "cli/cli_common.h"

namespace qcrash::cli {

int RunSnapshot(int argc, char** argv) {
  constexpr const char* kUsage =
      "usage: qcrash snapshot [-l | -c NAME | -a NAME | -d NAME] [-U] FILE\n";
  ResetGetopt();
  char mode = 0;
  std::string name;
  bool force_share = false;
  int c;
  while ((c = getopt(argc, argv, "lc:a:d:Uh")) != -1) {
    switch (c) {
      case 'l':
      case 'c':
      case 'a':
      case 'd':
        if (mode != 0) return ReportUsage("snapshot: one of -l, -c, -a, -d");
        mode = static_cast<char>(c);
        if (optarg) name = optarg;
        break;
      case 'U':
        force_share = true;
        break;
      case 'h':
      default:
        return HelpOrBadOption(c, kUsage);
    }
  }
  if (optind + 1 != argc || mode == 0) {
    std::fprintf(stderr, "%s", kUsage);
    return 1;
  }
  const std::string path = argv[optind];
  engine::OpenOptions options;
  options.read_only = mode == 'l';
  auto opened = OpenImage(path, options, force_share && mode == 'l');
  if (!opened.ok()) return ReportError(path, opened.status());
  engine::Image& image = *opened->image;
  auto list = image.Snapshots();
  if (!list.ok()) return ReportError(path, list.status());
  if (mode == 'l') {
    // Nothing at all for an image without snapshots, as qemu-img.
    if (!list->empty()) std::printf("Snapshot list:\n%s\n", SnapshotListRow(nullptr).c_str());
    for (const engine::SnapshotEntry& s : *list) std::printf("%s\n", SnapshotListRow(&s).c_str());
    return 0;
  }
  const bool exists = engine::FindSnapshot(*list, name) != list->end();
  Status done;
  std::string action;
  if (mode == 'c') {
    action = "create";
    done = image.CreateSnapshot(name);
  } else if (mode == 'a') {
    action = "apply";
    done = exists ? image.ApplySnapshot(name)
                  : Status::InvalidArgument("Failed to load snapshot: No such file or directory");
  } else {
    action = "delete";
    done = exists ? image.DeleteSnapshot(name) : Status::InvalidArgument("snapshot not found");
  }
  if (done.ok()) done = image.Close();
  if (!done.ok()) {
    const std::string why = exists || mode == 'c' ? done.ToString() : done.message();
    return ReportUsage("Could not " + action + " snapshot '" + name + "': " + why);
  }
  return 0;
}

}  // namespace qcrash::cli
