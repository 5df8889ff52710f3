// `qcrash snapshot -c|-d|-l [NAME] FILE`: qemu-img snapshot's create, delete
// and list (engine/snapshots.cc). Work in progress (issue 15): apply is not
// written yet, and the crash tests of create and delete are not either.
#include <getopt.h>

#include <cstdio>
#include <string>

#include "cli/cli_common.h"

namespace qcrash::cli {

int RunSnapshot(int argc, char** argv) {
  constexpr const char* kUsage = "usage: qcrash snapshot [-l | -c NAME | -d NAME] [-U] FILE\n";
  ResetGetopt();
  char mode = 0;
  std::string name;
  bool force_share = false;
  int c;
  while ((c = getopt(argc, argv, "lc:d:Uh")) != -1) {
    switch (c) {
      case 'l':
      case 'c':
      case 'd':
        if (mode != 0) return ReportUsage("snapshot: one of -l, -c, -d");
        mode = static_cast<char>(c);
        if (optarg) name = optarg;
        break;
      case 'U':
        force_share = true;
        break;
      case 'h':
        std::printf("%s", kUsage);
        return 0;
      default:
        std::fprintf(stderr, "%s", kUsage);
        return 1;
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
  if (mode == 'l') {
    auto list = image.Snapshots();
    if (!list.ok()) return ReportError(path, list.status());
    for (const engine::SnapshotEntry& s : *list)
      std::printf("%s\t%s\n", s.id.c_str(), s.name.c_str());
    return 0;
  }
  Status done = mode == 'c' ? image.CreateSnapshot(name) : image.DeleteSnapshot(name);
  if (done.ok()) done = image.Close();
  if (!done.ok()) return ReportError(path, done);
  return 0;
}

}  // namespace qcrash::cli
