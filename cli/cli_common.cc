// Shared CLI helpers: qemu-compatible parsing and printing, and image opening
// with backing files resolved the way QEMU resolves them.
#include "cli/cli_common.h"

#include <getopt.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "cli/destination.h"
#include "engine/bug_catalogue.h"
#include "engine/compression.h"
#include "engine/qcow2_format.h"

namespace qcrash::cli {

std::string DumpJson(const nlohmann::json& value, int indent) {
  return value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string DumpJson(const nlohmann::ordered_json& value, int indent) {
  return value.dump(indent, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

int ReportError(const std::string& file, const Status& status) {
  // One line, always: some messages (QEMU's lock wording) carry a newline.
  std::string text = status.ToString();
  for (size_t at = text.find('\n'); at != std::string::npos; at = text.find('\n', at)) {
    text.replace(at, 1, at + 1 < text.size() ? " " : "");
  }
  std::fprintf(stderr, "qcrash: %s: %s\n", file.c_str(), text.c_str());
  return 1;
}

int ReportUsage(const std::string& message) {
  std::fprintf(stderr, "qcrash: %s\n", message.c_str());
  return 1;
}

Result<uint64_t> ParseSize(std::string_view text) {
  const std::string input(text);
  const auto bad = [&input]() {
    return Status::InvalidArgument("invalid size '" + input +
                                   "' (use a number with an optional k, M, G, T, P or E suffix)");
  };
  if (input.empty() || input[0] == '-' || input[0] == '+' || std::isspace(input[0])) return bad();
  errno = 0;
  char* end = nullptr;
  const unsigned long long whole = std::strtoull(input.c_str(), &end, 0);
  if (errno != 0 || end == input.c_str()) return bad();
  const bool hex = input.size() > 1 && input[0] == '0' && (input[1] == 'x' || input[1] == 'X');
  double fraction = 0;
  if (*end == '.' && !hex) {
    char* fraction_end = nullptr;
    fraction = std::strtod(end, &fraction_end);
    if (fraction_end == end + 1) return bad();  // "1." without digits
    end = fraction_end;
  }
  uint32_t shift = 0;
  if (*end != '\0') {
    static constexpr std::string_view kSuffixes = "bkmgtpe";
    const size_t index = kSuffixes.find(static_cast<char>(std::tolower(*end)));
    if (index == std::string_view::npos || end[1] != '\0' || hex) return bad();
    shift = static_cast<uint32_t>(index * 10);
  }
  if (fraction != 0 && shift == 0) return bad();  // fractional bytes make no sense
  const double value =
      (static_cast<double>(whole) + fraction) * std::ldexp(1.0, static_cast<int>(shift));
  if (value >= 18446744073709549568.0) return bad();  // largest double below 2^64
  if (fraction == 0) {
    if (shift > 0 && (whole >> (64 - shift)) != 0) return bad();
    return static_cast<uint64_t>(whole) << shift;
  }
  return static_cast<uint64_t>(value);
}

Result<std::map<std::string, std::string>> ParseOptionList(std::string_view text) {
  std::map<std::string, std::string> options;
  std::string item;
  const auto flush_item = [&options, &item]() -> Status {
    if (item.empty()) return Status::Ok();
    const size_t equals = item.find('=');
    const std::string key = item.substr(0, equals);
    if (key.empty()) return Status::InvalidArgument("option without a name in '" + item + "'");
    options[key] = equals == std::string::npos ? "" : item.substr(equals + 1);
    item.clear();
    return Status::Ok();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == ',' && i + 1 < text.size() && text[i + 1] == ',') {
      item += ',';
      ++i;
    } else if (text[i] == ',') {
      QCRASH_RETURN_IF_ERROR(flush_item());
    } else {
      item += text[i];
    }
  }
  QCRASH_RETURN_IF_ERROR(flush_item());
  return options;
}

std::string SizeToStr(uint64_t bytes) {
  static const char* const kSuffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  int exponent = 0;
  std::frexp(static_cast<double>(bytes) / (1000.0 / 1024.0), &exponent);
  int index = (exponent - 1) / 10;
  if (index < 0) index = 0;
  if (index > 6) index = 6;
  const uint64_t divisor = uint64_t{1} << (index * 10);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%0.3g %sB", static_cast<double>(bytes) / divisor,
                kSuffixes[index]);
  return buffer;
}

std::string PathCombine(const std::string& base_file, const std::string& name) {
  if (name.empty() || name[0] == '/') return name;
  const size_t slash = base_file.rfind('/');
  if (slash == std::string::npos) return name;
  return base_file.substr(0, slash + 1) + name;
}

Result<engine::Header> ReadHeaderOf(const std::string& path) {
  QCRASH_ASSIGN_OR_RETURN(auto device, FileDevice::Open(path, FileDevice::Mode::kReadOnly));
  const uint64_t file_bytes = device->SizeBytes();
  std::vector<uint8_t> probe(std::min<uint64_t>(file_bytes, engine::kHeaderProbeBytes));
  QCRASH_RETURN_IF_ERROR(device->Read(0, probe));
  uint64_t cluster_bytes = probe.size();
  if (probe.size() >= 24) {
    const uint32_t cluster_bits = (uint32_t{probe[20]} << 24) | (uint32_t{probe[21]} << 16) |
                                  (uint32_t{probe[22]} << 8) | uint32_t{probe[23]};
    if (cluster_bits >= engine::format::kMinClusterBits &&
        cluster_bits <= engine::format::kMaxClusterBits) {
      cluster_bytes = uint64_t{1} << cluster_bits;
    }
  }
  std::vector<uint8_t> cluster0(
      std::min(file_bytes, std::max<uint64_t>(cluster_bytes, probe.size())));
  QCRASH_RETURN_IF_ERROR(device->Read(0, cluster0));
  return engine::DecodeHeader(cluster0, file_bytes);
}

std::vector<ChainFile> BackingChain(const std::string& path) {
  std::vector<ChainFile> chain{{path, false}};
  for (uint32_t depth = 0; depth < 16 && !chain.back().raw; ++depth) {
    auto header = ReadHeaderOf(chain.back().name);
    if (!header.ok() || header->backing_file.empty()) break;
    ChainFile next{PathCombine(chain.back().name, header->backing_file), false};
    if (header->backing_format) {
      next.raw = *header->backing_format == "raw";
    } else {
      next.raw = !ReadHeaderOf(next.name).ok();  // probed, as QEMU does without a format
    }
    chain.push_back(next);
  }
  return chain;
}

bool ApplyEngineOption(std::string_view option, const char* value, engine::OpenOptions& options) {
  const auto parse_count = [value](uint32_t& out) {
    char* end = nullptr;
    const unsigned long parsed = std::strtoul(value, &end, 10);
    if (*value == '\0' || *end != '\0' || parsed == 0 || parsed > 1u << 20) return false;
    out = static_cast<uint32_t>(parsed);
    return true;
  };
  if (option == "policy") {
    auto policy = engine::ParsePolicy(value);
    if (!policy.ok()) return ReportUsage(policy.status().ToString()) == 0;
    options.policy = *policy;
  } else if (option == "data-ordering") {
    if (std::strcmp(value, "strict") == 0) {
      options.data_ordering = engine::DataOrdering::kStrict;
    } else if (std::strcmp(value, "qemu") == 0) {
      options.data_ordering = engine::DataOrdering::kQemu;
    } else {
      return ReportUsage(std::string("unknown data ordering '") + value + "' (strict or qemu)") ==
             0;
    }
  } else if (option == "cache-l2") {
    if (!parse_count(options.l2_cache_tables)) {
      return ReportUsage(std::string("bad --cache-l2 count '") + value + "'") == 0;
    }
  } else if (option == "cache-refcount") {
    if (!parse_count(options.refcount_cache_blocks)) {
      return ReportUsage(std::string("bad --cache-refcount count '") + value + "'") == 0;
    }
  } else if (option == "bug" || option == "fault") {  // --fault: the old name
    const Status status = engine::EnableBug(value, options.faults);
    if (!status.ok()) return ReportUsage(status.ToString()) == 0;
  } else {
    return ReportUsage("unknown option --" + std::string(option)) == 0;
  }
  return true;
}

namespace {

Result<bool> ParseOnOff(const std::string& key, const std::string& value) {
  if (value == "on" || value == "true" || value == "yes") return true;
  if (value == "off" || value == "false" || value == "no") return false;
  return Status::InvalidArgument("parameter '" + key + "' expects 'on' or 'off'");
}

}  // namespace

Status ApplyCreateOptions(const std::map<std::string, std::string>& list,
                          engine::CreateOptions& options) {
  for (const auto& [key, value] : list) {
    if (key == "size") {
      QCRASH_ASSIGN_OR_RETURN(options.size_bytes, ParseSize(value));
    } else if (key == "cluster_size") {
      QCRASH_ASSIGN_OR_RETURN(const uint64_t bytes, ParseSize(value));
      if (bytes < 512 || bytes > (uint64_t{2} << 20) || (bytes & (bytes - 1)) != 0) {
        return Status::InvalidArgument("Cluster size must be a power of two between 512 and 2048k");
      }
      options.cluster_bits = static_cast<uint32_t>(std::countr_zero(bytes));
    } else if (key == "refcount_bits") {
      QCRASH_ASSIGN_OR_RETURN(const uint64_t bits, ParseSize(value));
      if (bits == 0 || bits > 64 || (bits & (bits - 1)) != 0) {
        return Status::InvalidArgument(
            "Refcount width must be a power of two and may not exceed 64 bits");
      }
      options.refcount_order = static_cast<uint32_t>(std::countr_zero(bits));
    } else if (key == "compat") {
      if (value == "0.10" || value == "v2") {
        options.version = 2;
      } else if (value == "1.1" || value == "v3") {
        options.version = 3;
      } else {
        return Status::InvalidArgument("Invalid parameter '" + value + "' for compat");
      }
    } else if (key == "lazy_refcounts") {
      QCRASH_ASSIGN_OR_RETURN(options.lazy_refcounts, ParseOnOff(key, value));
    } else if (key == "preallocation") {
      auto mode = engine::ParsePreallocation(value);
      if (!mode.ok())
        return Status::InvalidArgument("Invalid parameter '" + value + "' for preallocation");
      options.preallocation = *mode;
    } else if (key == "backing_file") {
      options.backing_file = value;
    } else if (key == "data_file") {
      if (value.empty()) return Status::InvalidArgument("Invalid parameter '' for data_file");
      options.data_file = value;
    } else if (key == "data_file_raw") {
      QCRASH_ASSIGN_OR_RETURN(options.data_file_raw, ParseOnOff(key, value));
    } else if (key == "backing_fmt") {
      if (value != "qcow2" && value != "raw") {
        return Status::NotSupported("backing format '" + value + "' (qcow2 or raw)");
      }
      options.backing_format = value;
    } else if (key == "extended_l2") {
      QCRASH_ASSIGN_OR_RETURN(options.extended_l2, ParseOnOff(key, value));
    } else if (key == "compression_type") {
      auto type = engine::ParseCompressionType(value);
      if (!type.ok()) {  // qemu-img's words
        return Status::InvalidArgument("Parameter 'compression-type' does not accept value '" +
                                       value + "'");
      }
      options.compression_type = *type;
    } else if (key == "encrypt") {
      if (value != "off") return Status::NotSupported(key + "=" + value + " is not implemented");
    } else {
      return Status::InvalidArgument("Invalid parameter '" + key + "'");
    }
  }
  return Status::Ok();
}

void InstallBackingOpener(const std::string& image_path, engine::OpenOptions& options) {
  // The engine opens a chain top-down and names each backing file as its
  // parent's header does, so the base for the next relative name is the
  // file opened last.
  auto base = std::make_shared<std::string>(image_path);
  options.open_backing = [base](const std::string& name) -> Result<std::unique_ptr<BlockDevice>> {
    const std::string resolved = PathCombine(*base, name);
    auto device = FileDevice::Open(resolved, FileDevice::Mode::kReadOnly);
    if (!device.ok()) return device.status();
    *base = resolved;
    return std::unique_ptr<BlockDevice>(std::move(device).value());
  };
}

void InstallDataFileOpener(const std::string& image_path, engine::OpenOptions& options) {
  options.open_data_file = [image_path](const std::string& name,
                                        bool read_only) -> Result<std::unique_ptr<BlockDevice>> {
    const std::string resolved = PathCombine(image_path, name);
    auto device = FileDevice::Open(
        resolved, read_only ? FileDevice::Mode::kReadOnly : FileDevice::Mode::kReadWrite);
    if (!device.ok()) return device.status();
    return std::unique_ptr<BlockDevice>(std::move(device).value());
  };
}

Result<std::unique_ptr<engine::ImageLock>> LockImage(const std::string& path, bool read_only,
                                                     bool force_share) {
  if (force_share) return std::unique_ptr<engine::ImageLock>();
  return engine::ImageLock::Acquire(
      path, read_only ? engine::ImageLock::Access::kRead : engine::ImageLock::Access::kWrite);
}

Status RefuseOwnBacking(const std::string& path) {
  const std::optional<FileId> self = IdOf(path);
  if (!self) return Status::Ok();
  const std::vector<ChainFile> chain = BackingChain(path);
  for (size_t depth = 1; depth < chain.size(); ++depth) {
    if (IdOf(chain[depth].name) == self) {
      return Status::InvalidArgument("the image is its own backing file (as '" + chain[depth].name +
                                     "', the same file by device and inode); refusing to write it");
    }
  }
  return Status::Ok();
}

Result<OpenedImage> OpenImage(const std::string& path, engine::OpenOptions options,
                              bool force_share) {
  // Decode the header read-only first: a file that is not a valid qcow2 image
  // is never opened for writing, so it stays byte-identical.
  QCRASH_RETURN_IF_ERROR(ReadHeaderOf(path).status());
  if (!options.read_only) QCRASH_RETURN_IF_ERROR(RefuseOwnBacking(path));
  OpenedImage opened;
  QCRASH_ASSIGN_OR_RETURN(opened.lock, LockImage(path, options.read_only, force_share));
  QCRASH_ASSIGN_OR_RETURN(opened.device,
                          FileDevice::Open(path, options.read_only ? FileDevice::Mode::kReadOnly
                                                                   : FileDevice::Mode::kReadWrite));
  if (!options.open_backing) InstallBackingOpener(path, options);
  if (!options.open_data_file) InstallDataFileOpener(path, options);
  QCRASH_ASSIGN_OR_RETURN(opened.image, engine::Image::Open(*opened.device, options));
  return opened;
}

namespace {

// A read-only view of a file that goes on, as zeroes, past its end.
class ZeroExtendedView final : public BlockDevice {
 public:
  explicit ZeroExtendedView(BlockDevice& file) : file_(file) {}
  Status Read(uint64_t offset_bytes, std::span<uint8_t> out) override {
    const uint64_t file_bytes = file_.SizeBytes();
    std::fill(out.begin(), out.end(), 0);
    if (offset_bytes >= file_bytes) return Status::Ok();
    const uint64_t available = std::min<uint64_t>(out.size(), file_bytes - offset_bytes);
    return file_.Read(offset_bytes, out.first(available));
  }
  Status Write(uint64_t, std::span<const uint8_t>) override { return ReadOnly(); }
  Status WriteFua(uint64_t, std::span<const uint8_t>) override { return ReadOnly(); }
  Status Flush() override { return Status::Ok(); }
  // The largest host offset a qcow2 image can name.
  uint64_t SizeBytes() const override { return uint64_t{1} << 56; }
  Status Resize(uint64_t, ResizeMode) override { return ReadOnly(); }
  DeviceGeometry Geometry() const override { return file_.Geometry(); }

 private:
  static Status ReadOnly() {
    return Status::ReadOnly("a view past the end of the file is read-only");
  }
  BlockDevice& file_;
};

}  // namespace

Result<OpenedImage> OpenToDescribe(const std::string& path, bool with_backing, bool force_share,
                                   bool zero_extended) {
  QCRASH_RETURN_IF_ERROR(ReadHeaderOf(path).status());
  OpenedImage opened;
  QCRASH_ASSIGN_OR_RETURN(opened.lock, LockImage(path, true, force_share));
  QCRASH_ASSIGN_OR_RETURN(opened.device, FileDevice::Open(path, FileDevice::Mode::kReadOnly));
  engine::OpenOptions options;
  options.read_only = true;
  if (with_backing) InstallBackingOpener(path, options);
  InstallDataFileOpener(path, options);
  auto image = zero_extended ? Result<std::unique_ptr<engine::Image>>(Status::IoError("unused"))
                             : engine::Image::Open(*opened.device, options);
  if (image.ok()) {
    opened.image = std::move(image).value();
    return opened;
  }
  opened.past_eof_view = std::make_unique<ZeroExtendedView>(*opened.device);
  if (with_backing) InstallBackingOpener(path, options);  // a fresh base for relative names
  auto salvaged = engine::Image::Open(*opened.past_eof_view, options);
  if (!salvaged.ok())
    return zero_extended ? salvaged.status() : image.status();  // not a truncation
  opened.image = std::move(salvaged).value();
  if (!zero_extended) opened.warning = image.status().ToString();
  return opened;
}

void ReportDescribeWarning(const std::string& file, const std::string& warning) {
  std::fprintf(stderr,
               "qcrash: %s: warning: %s; what lies past the end of the file is shown as zeroes\n",
               file.c_str(), warning.c_str());
}

void ResetGetopt() {
  optind = 0;  // glibc: 0 re-initialises getopt completely
  opterr = 1;
}

std::vector<option> WithEngineLongOptions(std::initializer_list<option> own) {
  std::vector<option> all(own);
  for (const char* name :
       {"policy", "cache-l2", "cache-refcount", "bug", "fault", "data-ordering"}) {
    all.push_back({name, required_argument, nullptr, 1});
  }
  all.push_back({nullptr, 0, nullptr, 0});
  return all;
}

int HelpOrBadOption(int option, const char* usage, int bad_usage_exit) {
  if (option == 'h') {
    std::fputs(usage, stdout);
    return 0;
  }
  std::fputs(usage, stderr);
  return bad_usage_exit;
}

int ParseReadCommandArgs(const char* command, const char* usage, int argc, char** argv,
                         ReadCommandArgs& args) {
  static const option kLong[] = {{"output", required_argument, nullptr, 'O'},
                                 {"help", no_argument, nullptr, 'h'},
                                 {"force-share", no_argument, nullptr, 'U'},
                                 {nullptr, 0, nullptr, 0}};
  ResetGetopt();
  int opt;
  while ((opt = getopt_long(argc, argv, "hf:U", kLong, nullptr)) != -1) {
    switch (opt) {
      case 'h':
        std::fputs(usage, stdout);
        return 0;
      case 'U':
        args.force_share = true;
        break;
      case 'f':
        if (std::string(optarg) != "qcow2")
          return ReportUsage(std::string(command) + ": only -f qcow2 is supported");
        break;
      case 'O':
        if (std::string(optarg) != "json" && std::string(optarg) != "human") {
          return ReportUsage(std::string("--output must be human or json, not '") + optarg + "'");
        }
        args.json = std::string(optarg) == "json";
        break;
      default:
        std::fputs(usage, stderr);
        return 1;
    }
  }
  if (argc - optind != 1) {
    std::fputs(usage, stderr);
    return 1;
  }
  args.path = argv[optind];
  return -1;
}

// One row of qemu-img snapshot -l (the header row for nullptr): fixed
// columns that a long id or name pushes right, the date in local time, the
// instruction count blank when the entry has none.
std::string SnapshotListRow(const engine::SnapshotEntry* s) {
  char line[256];
  if (s == nullptr) {
    std::snprintf(line, sizeof line, "%-10s%-17s%8s%20s%13s%11s", "ID", "TAG", "VM SIZE", "DATE",
                  "VM CLOCK", "ICOUNT");
    return line;
  }
  const time_t when = static_cast<time_t>(s->date_sec);
  struct tm tm {};
  localtime_r(&when, &tm);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
  const uint64_t secs = s->vm_clock_nsec / 1000000000;
  char clock[64];
  std::snprintf(clock, sizeof clock, "%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64 ".%03" PRIu64,
                secs / 3600, (secs / 60) % 60, secs % 60, (s->vm_clock_nsec / 1000000) % 1000);
  const std::string icount =
      s->icount && *s->icount != ~uint64_t{0} ? std::to_string(*s->icount) : "";
  // The id and name are printed apart: either may be longer than any buffer.
  std::string row = s->id;
  row.resize(std::max<size_t>(row.size(), 9), ' ');
  row += ' ' + s->name;
  row.resize(std::max<size_t>(row.size(), 9 + 1 + 16), ' ');
  std::snprintf(line, sizeof line, " %8s%20s%13s%11s", SizeToStr(s->vm_state_size).c_str(), date,
                clock, icount.c_str());
  return row + line;
}

}  // namespace qcrash::cli
