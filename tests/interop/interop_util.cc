// Scratch directories, process running and the guest model for the interop tests.
#include "tests/interop/interop_util.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace qcrash::interop {

std::string QcrashPath() {
  if (const char* dir = std::getenv("QCRASH_BINARY_DIR"); dir != nullptr && *dir != '\0') {
    const std::string path = std::string(dir) + "/qcrash";
    if (std::filesystem::exists(path)) return path;
  }
#ifdef QCRASH_CLI_PATH
  return QCRASH_CLI_PATH;
#else
  return "qcrash";
#endif
}

ScratchDir::ScratchDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/qcrash-interop-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << pattern;
  path_ = pattern;
}

ScratchDir::~ScratchDir() {
  if (::testing::Test::HasFailure()) {
    std::fprintf(stderr, "interop: kept %s for inspection\n", path_.c_str());
    return;
  }
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

void WriteFileBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

RunResult ScratchDir::Run(const std::string& command) const {
  const std::string out_path = path_ + "/.stdout";
  const std::string err_path = path_ + "/.stderr";
  const std::string shell =
      "cd '" + path_ + "' && { " + command + " ; } >'" + out_path + "' 2>'" + err_path + "'";
  const int status = std::system(shell.c_str());
  RunResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = ReadFileBytes(out_path);
  result.err = ReadFileBytes(err_path);
  std::filesystem::remove(out_path);
  std::filesystem::remove(err_path);
  return result;
}

RunResult ScratchDir::Qcrash(const std::string& args) const {
  return Run("'" + QcrashPath() + "' " + args);
}

std::string IoArgs(const std::vector<GuestOp>& ops) {
  std::string args;
  char buffer[128];
  for (const GuestOp& op : ops) {
    const auto offset = static_cast<unsigned long long>(op.offset);
    const auto length = static_cast<unsigned long long>(op.length);
    switch (op.kind) {
      case GuestOp::kWrite:
        std::snprintf(buffer, sizeof buffer, " -c 'write -P 0x%02x %llu %llu'", op.pattern, offset,
                      length);
        break;
      case GuestOp::kZero:
        std::snprintf(buffer, sizeof buffer, " -c 'write -z %llu %llu'", offset, length);
        break;
      case GuestOp::kZeroUnmap:
        std::snprintf(buffer, sizeof buffer, " -c 'write -z -u %llu %llu'", offset, length);
        break;
      case GuestOp::kDiscard:
        std::snprintf(buffer, sizeof buffer, " -c 'discard %llu %llu'", offset, length);
        break;
      case GuestOp::kFlush:
        std::snprintf(buffer, sizeof buffer, " -c flush");
        break;
    }
    args += buffer;
  }
  return args;
}

void ApplyToModel(const std::vector<GuestOp>& ops, std::vector<uint8_t>& guest) {
  for (const GuestOp& op : ops) {
    if (op.kind == GuestOp::kFlush) continue;
    const uint8_t value = op.kind == GuestOp::kWrite ? op.pattern : 0;
    std::fill(guest.begin() + static_cast<std::ptrdiff_t>(op.offset),
              guest.begin() + static_cast<std::ptrdiff_t>(op.offset + op.length), value);
  }
}

std::vector<GuestOp> MixedWorkload(uint64_t size_bytes, uint64_t cluster_bytes) {
  const uint64_t c = cluster_bytes;
  std::vector<GuestOp> ops = {
      {GuestOp::kWrite, 0, 3 * c + 512, 0x11},
      {GuestOp::kWrite, size_bytes / 2 + 1536, 8192, 0x22},
      {GuestOp::kZero, 8 * c, 2 * c, 0},
      {GuestOp::kWrite, 8 * c, 4096 < c ? 4096 : c, 0x33},
      {GuestOp::kZero, 0, c, 0},
      {GuestOp::kFlush, 0, 0, 0},
      {GuestOp::kZeroUnmap, c, c, 0},
      {GuestOp::kDiscard, 2 * c, c, 0},
      {GuestOp::kWrite, size_bytes - 4096, 4096, 0x44},
  };
  // One write per eighth of the disk: several L2 tables and refcount blocks.
  for (uint64_t i = 0; i < 8; ++i) {
    ops.push_back({GuestOp::kWrite, i * (size_bytes / 8) + 512 * (i + 1), 1024,
                   static_cast<uint8_t>(0x50 + i)});
  }
  ops.push_back({GuestOp::kWrite, 2 * c + 512, 512, 0x66});  // rewrite after discard
  ops.push_back({GuestOp::kFlush, 0, 0, 0});
  return ops;
}

std::string FirstDifference(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) {
    return "sizes differ: " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
  }
  const auto [first, second] = std::mismatch(a.begin(), a.end(), b.begin());
  if (first == a.end()) return "";
  const auto offset = static_cast<uint64_t>(first - a.begin());
  char buffer[128];
  std::snprintf(buffer, sizeof buffer, "first difference at guest offset %llu: 0x%02x vs 0x%02x",
                static_cast<unsigned long long>(offset), static_cast<uint8_t>(*first),
                static_cast<uint8_t>(*second));
  return buffer;
}

}  // namespace qcrash::interop
