// `qcrash create`: formats a new qcow2 image with qemu-img create's options
// and prints qemu-img's "Formatting ..." line.
#include <getopt.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "cli/cli_common.h"
#include "cli/destination.h"
#include "engine/compression.h"

namespace qcrash::cli {
namespace {

constexpr const char* kUsage =
    "usage: qcrash create [-q] [-f qcow2] [-o OPTIONS] [-b BACKING -F FMT] FILE [SIZE]\n"
    "  OPTIONS: cluster_size=, refcount_bits=, compat=0.10|1.1|v2|v3, lazy_refcounts=on|off,\n"
    "           preallocation=off|metadata|falloc|full, backing_file=, backing_fmt=qcow2|raw\n";

struct CreateArgs {
  std::map<std::string, std::string> options;  // -o, with -b/-F folded in
  std::string file;
  std::string size_text;
  bool quiet = false;
};

// Returns 0 on success, or the exit code after printing why not.
int ParseCreateArgs(int argc, char** argv, CreateArgs& args) {
  static const option kLong[] = {{"help", no_argument, nullptr, 'h'}, {nullptr, 0, nullptr, 0}};
  ResetGetopt();
  int opt;
  while ((opt = getopt_long(argc, argv, "hqf:o:b:F:", kLong, nullptr)) != -1) {
    switch (opt) {
      case 'h':
        std::fputs(kUsage, stdout);
        return -1;
      case 'q':
        args.quiet = true;
        break;
      case 'f':
        if (std::string(optarg) != "qcow2")
          return ReportUsage("create: only -f qcow2 is supported");
        break;
      case 'o': {
        auto list = ParseOptionList(optarg);
        if (!list.ok()) return ReportUsage("create: " + list.status().message());
        for (auto& [key, value] : *list) args.options[key] = value;
        break;
      }
      case 'b':
        args.options["backing_file"] = optarg;
        break;
      case 'F':
        args.options["backing_fmt"] = optarg;
        break;
      default:
        std::fputs(kUsage, stderr);
        return 1;
    }
  }
  if (optind >= argc || argc - optind > 2) {
    std::fputs(kUsage, stderr);
    return 1;
  }
  args.file = argv[optind];
  if (optind + 1 < argc) args.size_text = argv[optind + 1];
  return 0;
}

// The size of the backing file, for `create -b B FILE` without a size.
Result<uint64_t> BackingSize(const std::string& path, const std::string& format) {
  if (format == "raw") {
    QCRASH_ASSIGN_OR_RETURN(auto device, FileDevice::Open(path, FileDevice::Mode::kReadOnly));
    return device->SizeBytes();
  }
  QCRASH_ASSIGN_OR_RETURN(const engine::Header header, ReadHeaderOf(path));
  return header.size_bytes;
}

// Cross-option rules qemu-img enforces, with its messages.
Status ValidateCreateOptions(const engine::CreateOptions& options) {
  if (options.version == 2 && options.refcount_order != 4) {
    return Status::InvalidArgument(
        "Different refcount widths than 16 bits require compatibility level 1.1 or above (use "
        "version=v3 or greater)");
  }
  if (options.version == 2 && options.lazy_refcounts) {
    return Status::InvalidArgument(
        "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 "
        "or greater)");
  }
  if (options.extended_l2 && options.version == 2) {
    return Status::InvalidArgument(
        "Extended L2 entries are only supported with compatibility level 1.1 and above (use "
        "version=v3 or greater)");
  }
  if (options.extended_l2 && options.cluster_bits < 14) {
    return Status::InvalidArgument(
        "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  }
  if (options.version == 2 && options.compression_type != engine::CompressionType::kZlib) {
    return Status::InvalidArgument(
        "Non-zlib compression type is only supported with compatibility level 1.1 and above (use "
        "version=v3 or greater)");
  }
  if (!options.backing_file.empty() && options.preallocation != engine::Preallocation::kOff &&
      !options.extended_l2) {
    return Status::InvalidArgument(
        "Backing file and preallocation can only be used at the same time if extended_l2 is on");
  }
  if (!options.backing_file.empty() && options.backing_format.empty()) {
    return Status::InvalidArgument("Backing file specified without backing format");
  }
  if (options.data_file_raw && options.data_file.empty()) {
    return Status::InvalidArgument("data-file-raw requires data-file");
  }
  if (!options.data_file.empty() && options.version == 2) {
    return Status::InvalidArgument(
        "External data files are only supported with compatibility level 1.1 and above (use "
        "version=v3 or greater)");
  }
  if (!options.data_file.empty() && !options.backing_file.empty()) {
    return Status::NotSupported("a backing file with an external data file is not supported");
  }
  return Status::Ok();
}

// qemu-img's line, fields in its order; optional ones only when given.
void PrintFormatting(const CreateArgs& args, const engine::CreateOptions& options) {
  const auto given = [&args](const char* key) { return args.options.count(key) != 0; };
  std::string line = "Formatting '" + args.file + "', fmt=qcow2 cluster_size=" +
                     std::to_string(uint64_t{1} << options.cluster_bits) +
                     (options.extended_l2 ? " extended_l2=on" : " extended_l2=off");
  if (given("preallocation")) line += " preallocation=" + args.options.at("preallocation");
  line += std::string(" compression_type=") +
          engine::CompressionTypeName(static_cast<uint8_t>(options.compression_type)) +
          " size=" + std::to_string(options.size_bytes);
  if (given("compat")) line += " compat=" + args.options.at("compat");
  if (!options.backing_file.empty()) line += " backing_file=" + options.backing_file;
  if (!options.backing_format.empty()) line += " backing_fmt=" + options.backing_format;
  if (!options.data_file.empty()) line += " data_file=" + options.data_file;
  if (given("data_file_raw"))
    line += std::string(" data_file_raw=") + (options.data_file_raw ? "on" : "off");
  line += std::string(" lazy_refcounts=") + (options.lazy_refcounts ? "on" : "off");
  line += " refcount_bits=" + std::to_string(1u << options.refcount_order);
  std::printf("%s\n", line.c_str());
}

}  // namespace

int RunCreate(int argc, char** argv) {
  CreateArgs args;
  if (const int code = ParseCreateArgs(argc, argv, args); code != 0) return code < 0 ? 0 : code;
  engine::CreateOptions options;
  if (const Status status = ApplyCreateOptions(args.options, options); !status.ok()) {
    return ReportError(args.file, status);
  }
  if (!args.size_text.empty()) {
    auto size = ParseSize(args.size_text);
    if (!size.ok()) return ReportError(args.file, size.status());
    options.size_bytes = *size;
  }
  if (const Status status = ValidateCreateOptions(options); !status.ok()) {
    return ReportError(args.file, status);
  }
  if (!options.backing_file.empty()) {
    // Like qemu-img, make sure the backing file opens (and take its size when none is given).
    const std::string backing_path = PathCombine(args.file, options.backing_file);
    auto backing_size = BackingSize(backing_path, options.backing_format);
    if (!backing_size.ok()) return ReportError(backing_path, backing_size.status());
    if (args.size_text.empty() && args.options.count("size") == 0)
      options.size_bytes = *backing_size;
  } else if (args.size_text.empty() && args.options.count("size") == 0) {
    return ReportError(args.file, Status::InvalidArgument("Image creation needs a size parameter"));
  }
  // qemu-img refuses an image that would be its own backing file; the whole
  // chain is compared, by device and inode.
  std::vector<ProtectedFile> protect;
  if (!options.backing_file.empty()) {
    const std::string backing_path = PathCombine(args.file, options.backing_file);
    protect = options.backing_format == "raw"
                  ? std::vector<ProtectedFile>{{backing_path, "the backing file"}}
                  : ChainOf(backing_path, "the backing file");
  }
  auto destination = Destination::Open(args.file, protect);
  if (!destination.ok()) return ReportError(args.file, destination.status());
  if (!args.quiet) PrintFormatting(args, options);
  engine::OpenOptions open_options;
  InstallBackingOpener(args.file, open_options);
  if (!options.data_file.empty()) {
    // Like qemu-img, create the data file (relative to the image's
    // directory), sized to the disk.
    const std::string data_path = PathCombine(args.file, options.data_file);
    std::error_code same_error;
    if (std::filesystem::weakly_canonical(data_path, same_error) ==
        std::filesystem::weakly_canonical(args.file, same_error)) {
      return ReportError(
          args.file, Status::InvalidArgument("the data file is the image file itself; refusing"));
    }
    auto data_file = FileDevice::Open(data_path, FileDevice::Mode::kCreate);
    if (!data_file.ok()) return ReportError(data_path, data_file.status());
    const Status sized = (*data_file)->Resize(options.size_bytes, ResizeMode::kSparse);
    if (!sized.ok()) return ReportError(data_path, sized);
    InstallDataFileOpener(args.file, open_options);
  }
  auto image = engine::Image::Create((*destination)->device(), options, open_options);
  if (!image.ok()) return ReportError(args.file, image.status());
  Status status = (*image)->Close();
  if (status.ok()) status = (*destination)->Commit();
  if (!status.ok()) return ReportError(args.file, status);
  return 0;
}

}  // namespace qcrash::cli
