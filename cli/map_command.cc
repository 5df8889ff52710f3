// `qcrash map`: where each guest range lives, printed exactly like qemu-img
// map (JSON or human), with qemu-img's merging of adjacent extents.
#include <getopt.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/cli_common.h"
#include "cli/host_holes.h"

namespace qcrash::cli {
namespace {

constexpr const char* kUsage = "usage: qcrash map [--output=human|json] [-f qcow2] [-U] FILE\n";

using engine::MapExtent;

// qemu-img merges two extents when their flags and depth agree and, when
// they name a host offset, the host ranges are contiguous.
bool CanMerge(const MapExtent& current, const MapExtent& next) {
  return current.length != 0 && current.depth == next.depth && current.present == next.present &&
         current.zero == next.zero && current.data == next.data &&
         current.compressed == next.compressed && current.has_offset == next.has_offset &&
         (!current.has_offset || current.offset + current.length == next.offset) &&
         current.start + current.length == next.start;
}

std::vector<MapExtent> MergeExtents(const std::vector<MapExtent>& extents) {
  std::vector<MapExtent> merged;
  for (const MapExtent& extent : extents) {
    if (extent.length == 0) continue;
    if (!merged.empty() && CanMerge(merged.back(), extent)) {
      merged.back().length += extent.length;
    } else {
      merged.push_back(extent);
    }
  }
  return merged;
}

void PrintJson(const std::vector<MapExtent>& extents) {
  std::printf("[");
  for (size_t i = 0; i < extents.size(); ++i) {
    const MapExtent& e = extents[i];
    std::printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %" PRIu32
                ", \"present\": %s, \"zero\": %s, \"data\": %s",
                e.start, e.length, e.depth, e.present ? "true" : "false", e.zero ? "true" : "false",
                e.data ? "true" : "false");
    if (e.has_offset) std::printf(", \"offset\": %" PRIu64, e.offset);
    std::printf("}%s", i + 1 < extents.size() ? ",\n" : "");
  }
  std::printf("]\n");
}

// The human form lists only ranges with data, with the file holding them.
int PrintHuman(const std::vector<ChainFile>& chain, const std::vector<MapExtent>& extents) {
  const std::string& path = chain.front().name;
  std::printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
  for (const MapExtent& e : extents) {
    if (e.data && !e.has_offset) {
      std::fflush(stdout);
      std::fprintf(stderr,
                   "qcrash: %s: File contains external, encrypted or compressed clusters.\n",
                   path.c_str());
      return 1;
    }
    if (e.data && !e.zero) {
      const std::string& file = (e.depth < chain.size() ? chain[e.depth] : chain.back()).name;
      std::printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e.start, e.length,
                  e.has_offset ? e.offset : 0, file.c_str());
    }
  }
  return 0;
}

}  // namespace

int RunMap(int argc, char** argv) {
  ReadCommandArgs args;
  if (const int exit_code = ParseReadCommandArgs("map", kUsage, argc, argv, args); exit_code >= 0)
    return exit_code;
  const bool json = args.json;
  const bool force_share = args.force_share;
  const std::string path = args.path;
  auto opened = OpenToDescribe(path, /*with_backing=*/true, force_share);
  if (!opened.ok()) return ReportError(path, opened.status());
  if (!opened->warning.empty()) ReportDescribeWarning(path, opened->warning);
  auto extents = opened->image->Map();
  if (!extents.ok() && opened->warning.empty()) {
    // A table past the end of a truncated file, reached by the walk: QEMU
    // reads it as zeroes (unallocated), so describe it that way.
    const Status first = extents.status();
    opened->image.reset();
    auto reopened =
        OpenToDescribe(path, /*with_backing=*/true, force_share, /*zero_extended=*/true);
    if (!reopened.ok()) return ReportError(path, first);
    auto retried = reopened->image->Map();
    if (!retried.ok()) return ReportError(path, first);
    ReportDescribeWarning(path, first.ToString());
    extents = std::move(retried);
    opened = std::move(reopened);
  }
  if (!extents.ok()) return ReportError(path, extents.status());
  std::vector<ChainFile> chain = BackingChain(path);
  const engine::Header& header = opened->image->header();
  // With an external data file, the data lives there: qemu-img map names
  // that file and asks it about no holes.
  const std::vector<MapExtent> merged =
      MergeExtents(header.has_data_file() ? *extents : SplitHostHoles(chain, *extents));
  if (header.has_data_file()) chain[0].name = PathCombine(path, *header.data_file);
  if (json) {
    PrintJson(merged);
    return 0;
  }
  return PrintHuman(chain, merged);
}

}  // namespace qcrash::cli
