// `qcrash measure [--output=human|json] [-O qcow2|raw] [-o OPTIONS] [-f FMT]
// [-U] (--size N | FILE)`: qemu-img measure. How large a file a new image
// (or a conversion of FILE) needs: "required" for what it holds now and
// "fully allocated" with every cluster written, plus "bitmaps" for the
// persistent bitmaps a qcow2 source would carry over. The figures follow
// QEMU's arithmetic (engine/qcow2_format.h FullyAllocatedBytes), so they
// equal qemu-img's.
#include <getopt.h>

#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cli/guest_view.h"
#include "engine/qcow2_format.h"

namespace qcrash::cli {
namespace {

namespace f = engine::format;

constexpr const char* kUsage =
    "usage: qcrash measure [--output=human|json] [-O qcow2|raw] [-o OPTIONS] [-f FMT] [-U]\n"
    "                      (--size N | FILE)\n";

struct Measure {
  uint64_t required = 0;
  uint64_t fully_allocated = 0;
  std::optional<uint64_t> bitmaps;
};

uint64_t RoundUp(uint64_t value, uint64_t unit) { return (value + unit - 1) / unit * unit; }

// The bytes of `source` a new image without a backing file must hold:
// every cluster (of the new image's size) that has data somewhere in the
// source's chain, from the first data byte in it to its end. Ranges that
// read as zeroes or are allocated nowhere cost nothing.
Result<uint64_t> RequiredData(GuestView& source, uint64_t cluster_bytes) {
  QCRASH_ASSIGN_OR_RETURN(const std::vector<engine::MapExtent> extents, source.Extents());
  uint64_t required = 0;
  uint64_t offset = 0;  // where the next extent is looked at from
  for (const engine::MapExtent& e : extents) {
    const uint64_t end = e.start + e.length;
    if (end <= offset || e.zero || !(e.present && e.data)) continue;
    const uint64_t start = std::max(offset, e.start);
    // From the start of the cluster holding `start` (if nothing before in
    // it was counted) to the end of the cluster holding the extent's end.
    const uint64_t stop = RoundUp(end, cluster_bytes);
    required += start % cluster_bytes + (stop - start);
    offset = stop;
  }
  return required;
}

Result<uint64_t> BitmapsBytes(GuestView& source, uint64_t disk_bytes, uint32_t cluster_bits) {
  QCRASH_ASSIGN_OR_RETURN(const std::vector<engine::BitmapEntry> bitmaps,
                          source.image.image->Bitmaps());
  uint64_t bytes = 0, directory = 0;
  for (const engine::BitmapEntry& b : bitmaps) {
    bytes += f::BitmapBytes(disk_bytes, b.granularity_bits, cluster_bits);
    directory += f::BitmapDirectoryEntryBytes(b.name.size());
  }
  return bytes + RoundUp(directory, uint64_t{1} << cluster_bits);
}

// The new image's options, with qemu-img measure's own checks in its words.
Result<engine::CreateOptions> Qcow2Options(const std::map<std::string, std::string>& list) {
  engine::CreateOptions options;
  QCRASH_RETURN_IF_ERROR(ApplyCreateOptions(list, options));
  if (options.version == 2 && options.refcount_order != 4) {
    return Status::InvalidArgument(
        "Different refcount widths than 16 bits require compatibility level 1.1 or above (use "
        "compat=1.1 or greater)");
  }
  if (options.extended_l2 && options.cluster_bits < f::kMinExtendedL2ClusterBits) {
    return Status::InvalidArgument(
        "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  }
  return options;
}

Result<Measure> MeasureQcow2(const engine::CreateOptions& options, std::optional<uint64_t> size,
                             GuestView* source) {
  const uint64_t cluster_bytes = uint64_t{1} << options.cluster_bits;
  uint64_t disk = RoundUp(size.value_or(options.size_bytes), cluster_bytes);
  const uint64_t l2_tables =
      (disk / cluster_bytes + f::L2Entries(options.cluster_bits, options.extended_l2) - 1) /
      f::L2Entries(options.cluster_bits, options.extended_l2);
  if (l2_tables * f::kL1EntryBytes > f::kMaxL1TableBytes) {
    return Status::InvalidArgument("The image size is too large (try using a larger cluster size)");
  }
  uint64_t required = 0;
  if (source != nullptr) {
    disk = RoundUp(source->size_bytes, cluster_bytes);
    // With a backing file, nothing says what it shares with the source:
    // every cluster counts.
    if (!options.backing_file.empty()) {
      required = disk;
    } else {
      QCRASH_ASSIGN_OR_RETURN(required, RequiredData(*source, cluster_bytes));
    }
  }
  if (options.preallocation == engine::Preallocation::kFull ||
      options.preallocation == engine::Preallocation::kFalloc) {
    required = disk;
  }
  Measure m;
  m.fully_allocated = f::FullyAllocatedBytes(disk, options.cluster_bits, options.refcount_order,
                                             options.extended_l2);
  // Metadata for every cluster stays counted: an overestimate, as QEMU's.
  m.required = m.fully_allocated - disk + required;
  // Bitmaps only when both the source and the new image can hold them.
  if (source != nullptr && !source->raw && options.version >= 3) {
    QCRASH_ASSIGN_OR_RETURN(m.bitmaps,
                            BitmapsBytes(*source, source->size_bytes, options.cluster_bits));
  }
  return m;
}

// A raw file is as large as the disk, whatever the source holds (its
// unallocated sectors count too).
Measure MeasureRaw(std::optional<uint64_t> size, const GuestView* source) {
  Measure m;
  m.required = m.fully_allocated = RoundUp(source ? source->size_bytes : *size, 512);
  return m;
}

// The first -o key raw does not take, in the order given (qemu-img names
// the first one).
std::optional<std::string> FirstKeyNotForRaw(std::string_view text) {
  while (!text.empty()) {
    const size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    const std::string key(item.substr(0, item.find('=')));
    if (!key.empty() && key != "size" && key != "preallocation") return key;
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return std::nullopt;
}

}  // namespace

int RunMeasure(int argc, char** argv) {
  enum : int { kOutput = 256, kSize, kImageOpts, kObject };
  static const option kLong[] = {{"output", required_argument, nullptr, kOutput},
                                 {"size", required_argument, nullptr, kSize},
                                 {"force-share", no_argument, nullptr, 'U'},
                                 {"image-opts", no_argument, nullptr, kImageOpts},
                                 {"object", required_argument, nullptr, kObject},
                                 {"help", no_argument, nullptr, 'h'},
                                 {nullptr, 0, nullptr, 0}};
  ResetGetopt();
  std::string source_format, target_format = "raw", options_text;
  std::optional<uint64_t> size;
  bool json = false, force_share = false;
  for (int c; (c = getopt_long(argc, argv, "hf:O:o:l:U", kLong, nullptr)) != -1;) {
    switch (c) {
      case 'f':
        source_format = optarg;
        break;
      case 'O':
        target_format = optarg;
        break;
      case 'o':
        // Repeated -o options add up, as qemu-img's.
        options_text += (options_text.empty() ? "" : ",") + std::string(optarg);
        break;
      case 'l':
        return ReportUsage("measure: -l (a snapshot as the source) is not supported");
      case 'U':
        force_share = true;
        break;
      case kOutput:
        if (std::string(optarg) != "human" && std::string(optarg) != "json")
          return ReportUsage("--output must be used with human or json as argument.");
        json = std::string(optarg) == "json";
        break;
      case kSize: {
        auto parsed = ParseSize(optarg);
        if (!parsed.ok())
          return ReportUsage(
              "Invalid image size specified. Must be between 0 and 9223372036854775807.");
        size = *parsed;
        break;
      }
      case kImageOpts:
      case kObject:
        return ReportUsage("measure: --image-opts and --object are not supported");
      case 'h':
      default:
        return HelpOrBadOption(c, kUsage);
    }
  }
  if (argc - optind > 1) {
    std::fprintf(stderr, "%s", kUsage);
    return 1;
  }
  const bool has_file = argc - optind == 1;
  if (has_file && size) return ReportUsage("--size N cannot be used together with a filename.");
  if (!has_file && !size) return ReportUsage("Either --size N or one filename must be specified.");
  if (target_format != "qcow2" && target_format != "raw")
    return ReportUsage("Block driver '" + target_format + "' does not support size measurement");
  auto list = ParseOptionList(options_text);
  if (!list.ok()) return ReportUsage(list.status().message());
  if (target_format == "raw") {
    if (auto key = FirstKeyNotForRaw(options_text))
      return ReportUsage("Invalid parameter '" + *key + "'");
  }
  engine::CreateOptions qcow2;
  if (target_format == "qcow2") {
    auto checked = Qcow2Options(*list);
    if (!checked.ok()) return ReportUsage(checked.status().message());
    qcow2 = *checked;
  }
  std::optional<GuestView> source;
  std::string path;
  if (has_file) {
    path = argv[optind];
    auto opened = OpenGuestView(path, source_format, force_share);
    if (!opened.ok()) return ReportError(path, opened.status());
    source.emplace(std::move(*opened));
  }
  GuestView* from = source ? &*source : nullptr;
  auto measured = target_format == "qcow2" ? MeasureQcow2(qcow2, size, from)
                                           : Result<Measure>(MeasureRaw(size, from));
  if (!measured.ok()) {
    if (has_file) return ReportError(path, measured.status());
    return ReportUsage(measured.status().message());
  }
  if (json) {
    nlohmann::ordered_json out;
    if (measured->bitmaps) out["bitmaps"] = *measured->bitmaps;
    out["required"] = measured->required;
    out["fully-allocated"] = measured->fully_allocated;
    std::printf("%s\n", DumpJson(out, 4).c_str());
  } else {
    std::printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n",
                measured->required, measured->fully_allocated);
    if (measured->bitmaps) std::printf("bitmaps size: %" PRIu64 "\n", *measured->bitmaps);
  }
  return 0;
}

}  // namespace qcrash::cli
