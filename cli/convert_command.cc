// `qcrash convert`: copies an image's guest view (or, with -l, an internal
// snapshot's) into a new raw or qcow2 file. Ranges that read as zeroes are
// skipped (holes in raw, unallocated clusters in qcow2).
#include <getopt.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cli/cli_common.h"
#include "cli/destination.h"
#include "cli/guest_view.h"
#include "cli/progress.h"

namespace qcrash::cli {
namespace {

constexpr const char* kUsage =
    "usage: qcrash convert [-q] [-p] [-c] [-f qcow2|raw] [-O raw|qcow2] [-o OPTIONS] [--policy P]\n"
    "                      [-l snapshot.id=ID,snapshot.name=NAME | -l ID_OR_NAME] SRC DST\n"
    "  -p: progress, qemu-img's \"    (12.34/100%)\" line, on stderr (by itself on a terminal)\n";
constexpr uint64_t kChunkBytes = uint64_t{1} << 20;

struct ConvertArgs {
  std::string source_format = "qcow2";
  std::string target_format = "raw";
  std::map<std::string, std::string> options;
  engine::OpenOptions open_options;
  std::string source;
  std::string target;
  bool force_share = false;
  bool compress = false;  // -c: every cluster that is not all zeroes is written compressed
  bool quiet = false;     // -q: no progress, even on a terminal
  bool progress = false;  // -p
  // -l: the snapshot to copy instead of the active state, as qemu-img
  // takes it: by id, by name, both (both must match), or one word that is
  // an id or a name.
  std::optional<std::string> snapshot_id;
  std::optional<std::string> snapshot_name;
  std::optional<std::string> snapshot_id_or_name;
};

// -l's argument: "snapshot.id=ID,snapshot.name=NAME" (either or both) or
// "ID_OR_NAME".
int ParseSnapshotParam(const char* text, ConvertArgs& args) {
  if (std::strchr(text, '=') == nullptr) {
    args.snapshot_id_or_name = text;
    return 0;
  }
  auto list = ParseOptionList(text);
  if (!list.ok()) return ReportUsage("convert: " + list.status().message());
  for (auto& [key, value] : *list) {
    if (key == "snapshot.id") {
      args.snapshot_id = value;
    } else if (key == "snapshot.name") {
      args.snapshot_name = value;
    } else {
      return ReportUsage("Invalid parameter '" + key + "'");
    }
  }
  return 0;
}

int ParseConvertArgs(int argc, char** argv, ConvertArgs& args) {
  static const option kLong[] = {{"help", no_argument, nullptr, 'h'},
                                 {"policy", required_argument, nullptr, 1},
                                 {"cache-l2", required_argument, nullptr, 2},
                                 {"cache-refcount", required_argument, nullptr, 3},
                                 {nullptr, 0, nullptr, 0}};
  ResetGetopt();
  int opt;
  int index = 0;
  while ((opt = getopt_long(argc, argv, "hqpcUf:O:o:l:", kLong, &index)) != -1) {
    switch (opt) {
      case 'h':
        std::fputs(kUsage, stdout);
        return -1;
      case 'q':
        args.quiet = true;
        break;
      case 'p':
        args.progress = true;
        break;
      case 'U':
        args.force_share = true;
        break;
      case 'c':
        args.compress = true;
        break;
      case 'f':
        args.source_format = optarg;
        break;
      case 'O':
        args.target_format = optarg;
        break;
      case 'l':
        if (const int code = ParseSnapshotParam(optarg, args); code != 0) return code;
        break;
      case 'o': {
        auto list = ParseOptionList(optarg);
        if (!list.ok()) return ReportUsage("convert: " + list.status().message());
        for (auto& [key, value] : *list) args.options[key] = value;
        break;
      }
      case 1:
      case 2:
      case 3:
        if (!ApplyEngineOption(kLong[index].name, optarg, args.open_options)) return 1;
        break;
      default:
        std::fputs(kUsage, stderr);
        return 1;
    }
  }
  for (const std::string& format : {args.source_format, args.target_format}) {
    if (format != "qcow2" && format != "raw") {
      return ReportUsage("convert: unknown format '" + format + "' (qcow2 or raw)");
    }
  }
  if (argc - optind != 2) {
    std::fputs(kUsage, stderr);
    return 1;
  }
  if (args.compress && args.target_format != "qcow2") {
    return ReportUsage("Compression not supported for this file format");  // qemu-img's words
  }
  args.source = argv[optind];
  args.target = argv[optind + 1];
  return 0;
}

using Writer = std::function<Status(uint64_t offset, std::span<const uint8_t> data)>;

// Writes the runs of `data` that are not all zero, `granule` bytes at a time.
Status WriteNonZeroRuns(uint64_t offset, std::span<const uint8_t> data, uint64_t granule,
                        const Writer& write) {
  size_t run_start = 0;
  bool in_run = false;
  for (size_t at = 0; at < data.size(); at += granule) {
    const size_t end = std::min<size_t>(data.size(), at + granule);
    const bool zero =
        std::all_of(data.begin() + at, data.begin() + end, [](uint8_t b) { return b == 0; });
    if (!zero && !in_run) {
      run_start = at;
      in_run = true;
    } else if (zero && in_run) {
      QCRASH_RETURN_IF_ERROR(write(offset + run_start, data.subspan(run_start, at - run_start)));
      in_run = false;
    }
  }
  if (in_run) QCRASH_RETURN_IF_ERROR(write(offset + run_start, data.subspan(run_start)));
  return Status::Ok();
}

// The guest view of the source: reads plus the ranges known to be zero.
struct Source {
  uint64_t size_bytes = 0;
  std::function<Status(uint64_t, std::span<uint8_t>)> read;
  std::vector<engine::MapExtent> zero_extents;  // qcow2 only
  GuestView view;
};

// The snapshot -l names, as the guest view to copy: its size, its reads, no
// extents known to be zero (every range is read, zeroes are skipped).
Status OpenSnapshotSource(const ConvertArgs& args, Source& source) {
  QCRASH_ASSIGN_OR_RETURN(const std::vector<engine::SnapshotEntry> table,
                          source.view.image.image->Snapshots());
  auto found = table.end();
  if (args.snapshot_id_or_name) {
    found = engine::FindSnapshot(table, *args.snapshot_id_or_name);
  } else {
    found = std::find_if(table.begin(), table.end(), [&](const engine::SnapshotEntry& s) {
      return (!args.snapshot_id || s.id == *args.snapshot_id) &&
             (!args.snapshot_name || s.name == *args.snapshot_name);
    });
  }
  // qemu-img's words.
  if (found == table.end())
    return Status::InvalidArgument("Failed to load snapshot: Can't find snapshot");
  // As qemu-img: the output has the disk's size now, whatever the
  // snapshot's; past the snapshot's size it reads zeroes.
  source.size_bytes = source.view.image.image->size_bytes();
  const uint64_t snapshot_bytes = found->disk_size.value_or(source.size_bytes);
  source.read = [&source, id = found->id, snapshot_bytes](uint64_t offset, std::span<uint8_t> out) {
    const uint64_t inside =
        offset < snapshot_bytes ? std::min(out.size(), snapshot_bytes - offset) : 0;
    std::fill(out.begin() + inside, out.end(), 0);
    if (inside == 0) return Status::Ok();
    return source.view.image.image->ReadSnapshot(id, offset, out.first(inside));
  };
  return Status::Ok();
}

Status OpenSource(const ConvertArgs& args, Source& source) {
  QCRASH_ASSIGN_OR_RETURN(source.view,
                          OpenGuestView(args.source, args.source_format, args.force_share));
  source.size_bytes = source.view.size_bytes;
  source.read = [&source](uint64_t offset, std::span<uint8_t> out) {
    return source.view.Read(offset, out);
  };
  if (source.view.raw) return Status::Ok();
  if (args.snapshot_id || args.snapshot_name || args.snapshot_id_or_name)
    return OpenSnapshotSource(args, source);
  QCRASH_ASSIGN_OR_RETURN(auto extents, source.view.image.image->Map());
  for (const engine::MapExtent& extent : extents) {
    if (extent.zero && !extent.data) source.zero_extents.push_back(extent);
  }
  return Status::Ok();
}

// Copies every range of the source that is not known to be zero.
Status CopyGuestView(Source& source, uint64_t granule, const Writer& write,
                     ProgressLine& progress) {
  std::vector<uint8_t> buffer(kChunkBytes);
  size_t next_zero = 0;
  uint64_t offset = 0;
  while (offset < source.size_bytes) {
    while (next_zero < source.zero_extents.size() &&
           source.zero_extents[next_zero].start + source.zero_extents[next_zero].length <= offset) {
      ++next_zero;
    }
    uint64_t end = std::min(source.size_bytes, offset + kChunkBytes);
    if (next_zero < source.zero_extents.size()) {
      const engine::MapExtent& zero = source.zero_extents[next_zero];
      if (zero.start <= offset) {
        offset = zero.start + zero.length;
        continue;
      }
      end = std::min(end, zero.start);
    }
    const std::span<uint8_t> chunk(buffer.data(), end - offset);
    QCRASH_RETURN_IF_ERROR(source.read(offset, chunk));
    QCRASH_RETURN_IF_ERROR(WriteNonZeroRuns(offset, chunk, granule, write));
    offset = end;
    progress.Update(100.0 * static_cast<double>(offset) / static_cast<double>(source.size_bytes));
  }
  return Status::Ok();
}

// convert -c: the guest view cluster by cluster (target clusters), each one
// that is not all zeroes written compressed, as qemu-img convert -c does.
Status CopyCompressed(Source& source, engine::Image& output, ProgressLine& progress) {
  const uint64_t cb = uint64_t{1} << output.header().cluster_bits;
  std::vector<uint8_t> cluster(cb);
  for (uint64_t offset = 0; offset < source.size_bytes; offset += cb) {
    const std::span<uint8_t> chunk(cluster.data(), std::min(cb, source.size_bytes - offset));
    progress.Update(100.0 * static_cast<double>(offset) / static_cast<double>(source.size_bytes));
    QCRASH_RETURN_IF_ERROR(source.read(offset, chunk));
    if (std::all_of(chunk.begin(), chunk.end(), [](uint8_t b) { return b == 0; })) continue;
    QCRASH_RETURN_IF_ERROR(output.WriteCompressed(offset, chunk));
  }
  return Status::Ok();
}

}  // namespace

int RunConvert(int argc, char** argv) {
  ConvertArgs args;
  if (const int code = ParseConvertArgs(argc, argv, args); code != 0) return code < 0 ? 0 : code;
  Source source;
  if (const Status status = OpenSource(args, source); !status.ok()) {
    if (status.message().starts_with("Failed to load snapshot"))
      return ReportUsage(status.message());
    return ReportError(args.source, status);
  }
  // The source (and its backing chain) is open for reading: the destination
  // must be none of them, and it is replaced only once complete.
  const std::vector<ProtectedFile> protect =
      args.source_format == "raw" ? std::vector<ProtectedFile>{{args.source, "the source"}}
                                  : ChainOf(args.source, "the source");
  auto destination = Destination::Open(args.target, protect);
  if (!destination.ok()) return ReportError(args.target, destination.status());
  FileDevice& target = (*destination)->device();
  ProgressLine progress(ProgressWanted(args.progress, args.quiet));
  progress.Update(0);
  if (args.target_format == "raw") {
    Status status = (*destination)->regular()
                        ? target.Resize(source.size_bytes, ResizeMode::kSparse)
                        : Status::Ok();
    if (status.ok()) {
      status = CopyGuestView(
          source, 4096,
          [&target](uint64_t offset, std::span<const uint8_t> data) {
            return target.Write(offset, data);
          },
          progress);
    }
    if (status.ok()) status = (*destination)->Commit();
    return status.ok() ? 0 : ReportError(args.target, status);
  }
  engine::CreateOptions create;
  if (const Status status = ApplyCreateOptions(args.options, create); !status.ok()) {
    return ReportError(args.target, status);
  }
  create.size_bytes = source.size_bytes;
  auto image = engine::Image::Create(target, create, args.open_options);
  if (!image.ok()) return ReportError(args.target, image.status());
  engine::Image& output = **image;
  Status status = args.compress ? CopyCompressed(source, output, progress)
                                : CopyGuestView(
                                      source, uint64_t{1} << create.cluster_bits,
                                      [&output](uint64_t offset, std::span<const uint8_t> data) {
                                        return output.Write(offset, data);
                                      },
                                      progress);
  if (status.ok()) status = output.Close();
  if (status.ok()) status = (*destination)->Commit();
  return status.ok() ? 0 : ReportError(args.target, status);
}

}  // namespace qcrash::cli
