// `qcrash info`: qemu-img info's fields (human or JSON) from the decoded
// header alone, so it works on any image whose cluster 0 is valid.
#include <getopt.h>
#include <sys/stat.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/cli_common.h"
#include "engine/qcow2_format.h"

namespace qcrash::cli {
namespace {

namespace format = engine::format;

constexpr const char* kUsage = "usage: qcrash info [--output=human|json] [-f qcow2] [-U] FILE\n";

// The "format-specific" data as qemu-img reports it for qcow2.
nlohmann::ordered_json FormatSpecificData(const engine::Header& header) {
  nlohmann::ordered_json data;
  const bool v3 = header.version >= 3;
  data["compat"] = v3 ? "1.1" : "0.10";
  data["compression-type"] = header.compression_type == 1 ? "zstd" : "zlib";
  if (v3) data["lazy-refcounts"] = (header.compatible_features & format::kCompatLazyRefcounts) != 0;
  data["refcount-bits"] = 1u << header.refcount_order;
  if (v3) {
    data["corrupt"] = (header.incompatible_features & format::kIncompatCorrupt) != 0;
    data["extended-l2"] = (header.incompatible_features & format::kIncompatExtendedL2) != 0;
  }
  return data;
}

nlohmann::ordered_json InfoJson(const std::string& path, const engine::Header& header,
                                int64_t actual_size) {
  nlohmann::ordered_json info;
  if (!header.backing_file.empty() && header.backing_format) {
    info["backing-filename-format"] = *header.backing_format;
  }
  info["virtual-size"] = header.size_bytes;
  info["filename"] = path;
  info["cluster-size"] = header.cluster_bytes();
  info["format"] = "qcow2";
  if (actual_size >= 0) info["actual-size"] = actual_size;
  info["format-specific"] = {{"type", "qcow2"}, {"data", FormatSpecificData(header)}};
  if (!header.backing_file.empty()) {
    info["full-backing-filename"] = PathCombine(path, header.backing_file);
    info["backing-filename"] = header.backing_file;
  }
  info["dirty-flag"] = (header.incompatible_features & format::kIncompatDirty) != 0;
  return info;
}

void PrintHuman(const nlohmann::ordered_json& info) {
  const uint64_t virtual_size = info["virtual-size"];
  std::printf("image: %s\nfile format: qcow2\nvirtual size: %s (%llu bytes)\n",
              info["filename"].get<std::string>().c_str(), SizeToStr(virtual_size).c_str(),
              static_cast<unsigned long long>(virtual_size));
  if (info.contains("actual-size")) {
    std::printf("disk size: %s\n", SizeToStr(info["actual-size"].get<uint64_t>()).c_str());
  } else {
    std::printf("disk size: unavailable\n");
  }
  std::printf("cluster_size: %llu\n", static_cast<unsigned long long>(info["cluster-size"]));
  if (info["dirty-flag"].get<bool>()) std::printf("cleanly shut down: no\n");
  if (info.contains("backing-filename")) {
    const std::string name = info["backing-filename"];
    const std::string full = info["full-backing-filename"];
    std::printf("backing file: %s", name.c_str());
    if (name != full) std::printf(" (actual path: %s)", full.c_str());
    std::printf("\n");
    if (info.contains("backing-filename-format")) {
      std::printf("backing file format: %s\n",
                  info["backing-filename-format"].get<std::string>().c_str());
    }
  }
  std::printf("Format specific information:\n");
  for (const auto& [key, value] : info["format-specific"]["data"].items()) {
    std::string label = key;
    for (char& c : label) c = c == '-' ? ' ' : c;
    const std::string text = value.is_string() ? value.get<std::string>() : DumpJson(value);
    std::printf("    %s: %s\n", label.c_str(), text.c_str());
  }
}

}  // namespace

int RunInfo(int argc, char** argv) {
  ReadCommandArgs args;
  if (const int exit_code = ParseReadCommandArgs("info", kUsage, argc, argv, args); exit_code >= 0)
    return exit_code;
  const bool json = args.json;
  const bool force_share = args.force_share;
  const std::string path = args.path;
  auto header = ReadHeaderOf(path);
  if (!header.ok()) return ReportError(path, header.status());
  // Like qemu-img info, open the image (read-only, backing file not needed)
  // so that a file whose tables are broken is reported, not described; a
  // truncated file is described as QEMU reads it, with a warning.
  auto opened = OpenToDescribe(path, /*with_backing=*/false, force_share);
  if (!opened.ok()) return ReportError(path, opened.status());
  if (!opened->warning.empty()) ReportDescribeWarning(path, opened->warning);
  struct stat st {};
  const int64_t actual_size = ::stat(path.c_str(), &st) == 0 ? int64_t{st.st_blocks} * 512 : -1;
  const nlohmann::ordered_json info = InfoJson(path, *header, actual_size);
  if (json) {
    std::printf("%s\n", DumpJson(info, 4).c_str());
  } else {
    PrintHuman(info);
  }
  return 0;
}

}  // namespace qcrash::cli
