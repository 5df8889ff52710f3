// `qcrash info`: qemu-img info's fields (human or JSON) from the decoded
// header alone, so it works on any image whose cluster 0 is valid.
#include <getopt.h>
#include <sys/stat.h>

#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/cli_common.h"
#include "engine/compression.h"
#include "engine/qcow2_format.h"
#include "engine/snapshot_table.h"

namespace qcrash::cli {
namespace {

namespace format = engine::format;

constexpr const char* kUsage = "usage: qcrash info [--output=human|json] [-f qcow2] [-U] FILE\n";

// The "format-specific" data as qemu-img reports it for qcow2.
nlohmann::ordered_json FormatSpecificData(const engine::Header& header,
                                          const std::vector<engine::BitmapEntry>& bitmaps) {
  nlohmann::ordered_json data;
  const bool v3 = header.version >= 3;
  data["compat"] = v3 ? "1.1" : "0.10";
  const char* compression = engine::CompressionTypeName(header.compression_type);
  data["compression-type"] = compression != nullptr ? compression : "unknown";
  if (v3) data["lazy-refcounts"] = (header.compatible_features & format::kCompatLazyRefcounts) != 0;
  if (!bitmaps.empty()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const engine::BitmapEntry& b : bitmaps) {
      nlohmann::ordered_json flags = nlohmann::ordered_json::array();
      if (b.flags & engine::kBitmapInUse) flags.push_back("in-use");
      if (b.flags & engine::kBitmapAuto) flags.push_back("auto");
      list.push_back({{"flags", flags},
                      {"name", b.name},
                      {"granularity", uint64_t{1} << (b.granularity_bits & 63)}});
    }
    data["bitmaps"] = list;
  }
  data["refcount-bits"] = 1u << header.refcount_order;
  if (header.has_data_file()) {
    data["data-file"] = *header.data_file;
    data["data-file-raw"] = header.data_file_raw();
  }
  if (v3) {
    data["corrupt"] = (header.incompatible_features & format::kIncompatCorrupt) != 0;
    data["extended-l2"] = (header.incompatible_features & format::kIncompatExtendedL2) != 0;
  }
  return data;
}

nlohmann::ordered_json InfoJson(const std::string& path, const engine::Header& header,
                                int64_t actual_size,
                                const std::vector<engine::SnapshotEntry>& snapshots,
                                const std::vector<engine::BitmapEntry>& bitmaps) {
  nlohmann::ordered_json info;
  if (!snapshots.empty()) {
    // qemu-img's field order; icount only when the entry has one.
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const engine::SnapshotEntry& s : snapshots) {
      nlohmann::ordered_json e;
      if (s.icount && *s.icount != ~uint64_t{0}) e["icount"] = *s.icount;
      e["vm-clock-nsec"] = s.vm_clock_nsec % 1000000000;
      e["name"] = s.name;
      e["date-sec"] = s.date_sec;
      e["date-nsec"] = s.date_nsec;
      e["vm-clock-sec"] = s.vm_clock_nsec / 1000000000;
      e["id"] = s.id;
      e["vm-state-size"] = s.vm_state_size;
      list.push_back(e);
    }
    info["snapshots"] = list;
  }
  if (!header.backing_file.empty() && header.backing_format) {
    info["backing-filename-format"] = *header.backing_format;
  }
  info["virtual-size"] = header.size_bytes;
  info["filename"] = path;
  info["cluster-size"] = header.cluster_bytes();
  info["format"] = "qcow2";
  if (actual_size >= 0) info["actual-size"] = actual_size;
  info["format-specific"] = {{"type", "qcow2"}, {"data", FormatSpecificData(header, bitmaps)}};
  if (!header.backing_file.empty()) {
    info["full-backing-filename"] = PathCombine(path, header.backing_file);
    info["backing-filename"] = header.backing_file;
  }
  info["dirty-flag"] = (header.incompatible_features & format::kIncompatDirty) != 0;
  return info;
}

// One snapshot row as qemu-img prints it (the header row for nullptr),
// from the entry's JSON fields.
std::string SnapshotRow(const nlohmann::ordered_json* s) {
  if (s == nullptr) return SnapshotListRow(nullptr);
  engine::SnapshotEntry entry;
  entry.id = (*s)["id"].get<std::string>();
  entry.name = (*s)["name"].get<std::string>();
  entry.vm_state_size = (*s)["vm-state-size"].get<uint64_t>();
  entry.date_sec = static_cast<uint32_t>((*s)["date-sec"].get<uint64_t>());
  entry.vm_clock_nsec =
      (*s)["vm-clock-sec"].get<uint64_t>() * 1000000000 + (*s)["vm-clock-nsec"].get<uint64_t>();
  if (s->contains("icount")) entry.icount = (*s)["icount"].get<uint64_t>();
  return SnapshotListRow(&entry);
}

// qemu-img's dump of a value: scalars after "key: ", lists and dicts as
// nested blocks ("[i]:" for list items), four spaces deeper each level.
void PrintValue(int indent, const std::string& key, const nlohmann::ordered_json& value) {
  std::string label = key;
  for (char& c : label) c = c == '-' ? ' ' : c;
  if (value.is_object() || value.is_array()) {
    std::printf("%*s%s:\n", indent, "", label.c_str());
    size_t i = 0;
    for (const auto& [k, v] : value.items()) {
      PrintValue(indent + 4, value.is_array() ? "[" + std::to_string(i) + "]" : k, v);
      ++i;
    }
    return;
  }
  const std::string text = value.is_string() ? value.get<std::string>() : DumpJson(value);
  std::printf("%*s%s: %s\n", indent, "", label.c_str(), text.c_str());
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
  if (info.contains("snapshots")) {
    std::printf("Snapshot list:\n%s\n", SnapshotRow(nullptr).c_str());
    for (const auto& s : info["snapshots"]) std::printf("%s\n", SnapshotRow(&s).c_str());
  }
  std::printf("Format specific information:\n");
  for (const auto& [key, value] : info["format-specific"]["data"].items())
    PrintValue(4, key, value);
}

// qemu-img writes an empty list over two lines ("[" then "]" at the
// key's indentation); nlohmann writes "[]".
std::string QemuStyleEmptyLists(const std::string& text) {
  std::string out;
  size_t from = 0;
  while (from < text.size()) {
    size_t end = text.find('\n', from);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(from, end - from);
    const size_t at = line.find("[]");
    if (at != std::string::npos && line.find('"', at) == std::string::npos) {
      const size_t indent = line.find_first_not_of(' ');
      out += line.substr(0, at + 1) + "\n" + std::string(indent, ' ') + line.substr(at + 1);
    } else {
      out += line;
    }
    if (end < text.size()) out += '\n';
    from = end + 1;
  }
  return out;
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
  BlockDevice& device =
      opened->past_eof_view ? *opened->past_eof_view : static_cast<BlockDevice&>(*opened->device);
  auto snapshots = engine::ReadSnapshotTable(device, *header);
  if (!snapshots.ok()) return ReportError(path, snapshots.status());
  auto bitmaps = engine::ReadBitmapDirectory(device, *header);
  if (!bitmaps.ok()) return ReportError(path, bitmaps.status());
  const nlohmann::ordered_json info = InfoJson(path, *header, actual_size, *snapshots, *bitmaps);
  if (json) {
    std::printf("%s\n", QemuStyleEmptyLists(DumpJson(info, 4)).c_str());
  } else {
    PrintHuman(info);
  }
  return 0;
}

}  // namespace qcrash::cli
