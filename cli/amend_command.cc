// `qcrash amend [-f qcow2] [-q] [-p] -o OPTIONS FILE`: qemu-img amend's
// option changes (engine/amend.cc): compat, refcount_bits, lazy_refcounts
// and size, with qemu-img's messages and exit codes. Success prints nothing.
#include <getopt.h>

#include <cstdio>
#include <string>

#include "cli/cli_common.h"

namespace qcrash::cli {
namespace {

constexpr const char* kUsage =
    "usage: qcrash amend [-f qcow2] [-q] [-p] -o OPTIONS [--policy P] [--bug NAME] FILE\n";

// qemu-img amend -o help for qcow2, without the encryption options (qcrash
// has no encryption).
constexpr const char* kHelp =
    "Amend options for 'qcow2':\n"
    "  backing_file=<str>     - File name of a base image\n"
    "  backing_fmt=<str>      - Image format of the base image\n"
    "  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n"
    "  data_file=<str>        - File name of an external data file\n"
    "  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image\n"
    "  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n"
    "  refcount_bits=<num>    - Width of a reference count entry in bits\n"
    "  size=<size>            - Virtual disk size\n";

// Options qemu-img create takes that amend refuses as creation-only.
bool CreationOnly(const std::string& key) {
  for (const char* k :
       {"cluster_size", "preallocation", "extended_l2", "compression_type", "encryption",
        "encrypt.format", "encrypt.key-secret", "encrypt.cipher-alg", "encrypt.cipher-mode",
        "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg", "encrypt.hash-alg", "nocow"}) {
    if (key == k) return true;
  }
  return false;
}

Result<bool> ParseBool(const std::string& key, const std::string& value) {
  if (value == "on" || value == "yes" || value == "true") return true;
  if (value == "off" || value == "no" || value == "false") return false;
  return Status::InvalidArgument("Parameter '" + key + "' expects 'on' or 'off'");
}

// The -o list as engine::AmendOptions; refusals in qemu-img's words. Keys
// are checked first (an unknown or creation-only key), values after.
Result<engine::AmendOptions> ParseAmendOptions(const std::map<std::string, std::string>& list,
                                               const engine::Header& header) {
  for (const auto& [key, value] : list) {
    if (CreationOnly(key)) {
      return Status::InvalidArgument("Invalid parameter '" + key +
                                     "'. This option is only supported for image creation");
    }
    if (key != "compat" && key != "refcount_bits" && key != "lazy_refcounts" && key != "size" &&
        key != "backing_file" && key != "backing_fmt" && key != "data_file" &&
        key != "data_file_raw" && key.rfind("encrypt.", 0) != 0) {
      return Status::InvalidArgument("Invalid parameter '" + key + "'");
    }
  }
  engine::AmendOptions o;
  for (const auto& [key, value] : list) {
    if (key == "compat") {
      if (value == "0.10" || value == "v2") {
        o.version = 2;
      } else if (value == "1.1" || value == "v3") {
        o.version = 3;
      } else {
        return Status::InvalidArgument("Unknown compatibility level " + value);
      }
    } else if (key == "refcount_bits") {
      char* end = nullptr;
      const unsigned long long bits = std::strtoull(value.c_str(), &end, 0);
      if (value.empty() || *end != '\0' || value[0] == '-') {
        return Status::InvalidArgument("Parameter 'refcount_bits' expects a number");
      }
      o.refcount_bits = static_cast<uint32_t>(std::min<unsigned long long>(bits, 1u << 30));
    } else if (key == "lazy_refcounts") {
      QCRASH_ASSIGN_OR_RETURN(o.lazy_refcounts, ParseBool(key, value));
    } else if (key == "size") {
      QCRASH_ASSIGN_OR_RETURN(o.size_bytes, ParseSize(value));
    } else if (key == "backing_file" || key == "backing_fmt") {
      return Status::InvalidArgument(
          "Cannot amend the backing file. You can use 'qemu-img rebase' instead.");
    } else if (key == "data_file") {
      if (!header.has_data_file()) {
        return Status::InvalidArgument(
            "data-file can only be set for images that use an external data file");
      }
      return Status::NotSupported("amend cannot rename the external data file");
    } else if (key == "data_file_raw") {
      return Status::InvalidArgument("data-file-raw cannot be set on existing images");
    } else {
      return Status::NotSupported("amend " + key + "= is not supported (qcrash has no encryption)");
    }
  }
  return o;
}

}  // namespace

int RunAmend(int argc, char** argv) {
  static const std::vector<option> kLong =
      WithEngineLongOptions({{"help", no_argument, nullptr, 'h'}});
  ResetGetopt();
  engine::OpenOptions options;
  std::string format = "qcow2", option_text;
  bool have_options = false;
  int opt, index = 0;
  while ((opt = getopt_long(argc, argv, "hqpf:o:", kLong.data(), &index)) != -1) {
    switch (opt) {
      case 'h':
        std::fputs(kUsage, stdout);
        return 0;
      case 'q':
      case 'p':
        break;  // nothing is printed on success, so quiet and progress change nothing
      case 'f':
        format = optarg;
        break;
      case 'o':
        // Several -o lists join with a comma, as qemu-img's accumulate_options.
        option_text += (have_options ? "," : "") + std::string(optarg);
        have_options = true;
        break;
      case 1:
        if (!ApplyEngineOption(kLong[index].name, optarg, options)) return 1;
        break;
      default:
        std::fputs(kUsage, stderr);
        return 1;
    }
  }
  if (!have_options) return ReportUsage("Must specify options (-o)");
  auto list = ParseOptionList(option_text);
  if (!list.ok() || (list->empty() && option_text.empty())) {
    return ReportUsage("Invalid option list: " + option_text);
  }
  if (list->count("help") != 0 || list->count("?") != 0) {
    if (format != "qcow2")
      return ReportUsage("Format driver '" + format + "' does not support option amendment");
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (argc - optind != 1) return ReportUsage("Expecting one image file name");
  const std::string path = argv[optind];
  auto opened = OpenImage(path, options);
  if (!opened.ok()) return ReportError(path, opened.status());
  if (format != "qcow2") {
    return ReportUsage("Format driver '" + format + "' does not support option amendment");
  }
  engine::Image& image = *opened->image;
  auto amend = ParseAmendOptions(*list, image.header());
  if (!amend.ok()) return ReportUsage(amend.status().message());
  Status done = image.Amend(*amend);
  if (done.ok()) done = image.Close();
  if (!done.ok()) {
    const StatusCode code = done.code();
    if (code == StatusCode::kInvalidArgument || code == StatusCode::kNotSupported) {
      return ReportUsage(done.message());
    }
    return ReportError(path, done);
  }
  return 0;
}

}  // namespace qcrash::cli
