// Helpers every qcrash subcommand shares: qemu-style size and option parsing,
// one-line error reporting, and opening an image with its backing chain.
#pragma once

#include <getopt.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "engine/file_device.h"
#include "engine/header.h"
#include "engine/image.h"
#include "engine/image_lock.h"
#include "engine/options.h"
#include "engine/status.h"

namespace qcrash::cli {

// Prints "qcrash: FILE: <status>" on stderr and returns the exit code 1.
int ReportError(const std::string& file, const Status& status);
// Prints "qcrash: <message>" on stderr and returns the exit code 1.
int ReportUsage(const std::string& message);

// `value` as JSON text (`indent` as nlohmann's dump). Strings taken from an
// image (snapshot names, backing file names) need not be UTF-8: an invalid
// byte becomes U+FFFD instead of an exception that ends the process.
std::string DumpJson(const nlohmann::json& value, int indent = -1);
std::string DumpJson(const nlohmann::ordered_json& value, int indent = -1);  // keeps key order

// qemu_strtosz: "4096", "64k", "1.5G", "0x1000"; the suffix is case-insensitive
// (b, k, M, G, T, P, E) and a bare number is bytes.
Result<uint64_t> ParseSize(std::string_view text);

// "cluster_size=64k,compat=v3" as a key -> value map (qemu's -o syntax; ",,"
// stands for a literal comma). A bare key ("help") maps to "".
Result<std::map<std::string, std::string>> ParseOptionList(std::string_view text);

// qemu's size_to_str: "1 MiB", "324 KiB", "1.5 GiB".
std::string SizeToStr(uint64_t bytes);
// One row of qemu-img's snapshot table (`snapshot -l`, `info`); the header
// row for nullptr.
std::string SnapshotListRow(const engine::SnapshotEntry* s);

// QEMU's path_combine: a relative backing name is taken relative to the
// directory of the image naming it ("sub/a.qcow2" + "b.qcow2" = "sub/b.qcow2").
std::string PathCombine(const std::string& base_file, const std::string& name);

// Reads and decodes the header of a qcow2 file without opening the image.
Result<engine::Header> ReadHeaderOf(const std::string& path);

// One file of a backing chain, named as QEMU shows it.
struct ChainFile {
  std::string name;
  bool raw = false;
};

// The backing chain: [0] is `path` itself, [k] the file at depth k. Stops at
// the first raw or unreadable file.
std::vector<ChainFile> BackingChain(const std::string& path);

// InvalidArgument when `path` is in its own backing chain under any spelling
// (compared by device and inode): a command must not write an image it also
// reads as its backing file.
Status RefuseOwnBacking(const std::string& path);

// The commands that write take the engine options below: `own` (their own
// long options) followed by --policy, --cache-l2, --cache-refcount, --bug,
// --fault and --data-ordering (each with value 1: pass
// options[index].name to ApplyEngineOption) and the terminating entry.
std::vector<option> WithEngineLongOptions(std::initializer_list<option> own);

// Engine options shared by the commands that write (--policy, --cache-l2,
// --cache-refcount, --bug and its old name --fault). Returns false (after
// reporting) on a bad value.
bool ApplyEngineOption(std::string_view option, const char* value, engine::OpenOptions& options);

// Applies qemu-img create's -o options to `options`. Unknown keys are errors.
Status ApplyCreateOptions(const std::map<std::string, std::string>& list,
                          engine::CreateOptions& options);

// An image opened over a file, with the device and QEMU-compatible lock it
// owns (members are destroyed bottom-up: the image first, the lock last).
struct OpenedImage {
  std::unique_ptr<engine::ImageLock> lock;
  std::unique_ptr<FileDevice> device;
  std::unique_ptr<BlockDevice> past_eof_view;  // OpenToDescribe's zero-extended view, when used
  std::unique_ptr<engine::Image> image;
  // Why the image was opened through the zero-extended view ("" when not).
  std::string warning;
};

// Takes QEMU's advisory lock on `path`: a writer excludes every other user,
// a reader excludes writers (qemu-img's -U / force_share skips it).
Result<std::unique_ptr<engine::ImageLock>> LockImage(const std::string& path, bool read_only,
                                                     bool force_share);

// Installs an opener that resolves backing names as QEMU does (relative to
// the directory of the image that names them) and opens them read-only.
void InstallBackingOpener(const std::string& image_path, engine::OpenOptions& options);

// Installs an opener for the image's external data file: the name the
// header holds, relative to the image's directory (as QEMU resolves it).
void InstallDataFileOpener(const std::string& image_path, engine::OpenOptions& options);

// Opens `path` as qcow2 (read-only when options.read_only), backing chain
// included, holding QEMU's lock on it unless force_share.
Result<OpenedImage> OpenImage(const std::string& path, engine::OpenOptions options,
                              bool force_share = false);

// Opens `path` read-only for a command that only describes it (info, map).
// As QEMU reads a file, a table or cluster the header names past the end of
// a truncated file reads as zeroes: when the plain open fails and the image
// opens that way, the result says why in `warning` ("" when the plain open
// worked), and the command prints what it can with a warning line. info
// opens no backing file (qemu-img info does not need one), map does.
// `zero_extended` skips the plain open (for an error found after it, such as
// an L2 table past the end of the file that map reaches).
Result<OpenedImage> OpenToDescribe(const std::string& path, bool with_backing, bool force_share,
                                   bool zero_extended = false);

// Prints "qcrash: FILE: warning: MESSAGE; ..." on stderr for an OpenToDescribe warning.
void ReportDescribeWarning(const std::string& file, const std::string& warning);

// Resets getopt so that each command parses its own argv from the start.
void ResetGetopt();

// The last cases of a command's option switch: -h prints `usage` on stdout
// and exits 0; an option getopt rejected (it has said which) prints it on
// stderr and exits `bad_usage_exit`.
int HelpOrBadOption(int option, const char* usage, int bad_usage_exit = 1);

// The options the read-only commands share: [-f qcow2] [--output=human|json] [-U] FILE.
struct ReadCommandArgs {
  bool json = false;
  bool force_share = false;
  std::string path;
};
// Returns -1 to go on, or the exit code after printing the usage or an error.
int ParseReadCommandArgs(const char* command, const char* usage, int argc, char** argv,
                         ReadCommandArgs& args);

}  // namespace qcrash::cli
