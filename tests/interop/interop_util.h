// Helpers for the interop tests: a scratch directory per test, running the
// qcrash binary and QEMU's tools in it, and a guest-content model of the
// qemu-io style workloads the tests apply with either tool.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qcrash::interop {

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Where the qcrash binary is: $QCRASH_BINARY_DIR/qcrash, else the path CMake
// compiled in.
std::string QcrashPath();

// A fresh directory under $TMPDIR, removed when the test passed.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  // Runs `command` through /bin/sh with this directory as the working one.
  RunResult Run(const std::string& command) const;
  // Runs `qcrash ARGS` here.
  RunResult Qcrash(const std::string& args) const;

 private:
  std::string path_;
};

std::string ReadFileBytes(const std::string& path);
void WriteFileBytes(const std::string& path, const std::string& bytes);

// One guest operation, expressible as a qemu-io -c command.
struct GuestOp {
  enum Kind { kWrite, kZero, kZeroUnmap, kDiscard, kFlush } kind = kWrite;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint8_t pattern = 0;
};

// "-c 'write -P 0x11 0 4096' -c ..." for qemu-io and qcrash io alike.
std::string IoArgs(const std::vector<GuestOp>& ops);
// Applies ops to a flat guest model (discards read back as zeroes: no backing file).
void ApplyToModel(const std::vector<GuestOp>& ops, std::vector<uint8_t>& guest);
// A workload that touches several L2 tables and refcount blocks: unaligned
// writes across clusters, zero writes with and without unmap over allocated
// and unallocated clusters, cluster-aligned discards, rewrites after discard.
std::vector<GuestOp> MixedWorkload(uint64_t size_bytes, uint64_t cluster_bytes);

// Describes the first differing byte of two equal-sized guest images, or "".
std::string FirstDifference(const std::string& a, const std::string& b);

}  // namespace qcrash::interop
