// RunWorkloadOnQemu, RunFromDmLog, QemuImgCheck: qemu-io and qemu-img as
// child processes, the blklogwrites log imported into the sim's write log.
#include "properties/qemu_engine.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "engine/endian.h"
#include "engine/image.h"
#include "sim/chunked_image.h"
#include "sim/crash_model.h"
#include "sim/dm_log.h"
#include "sim/write_log.h"

extern char** environ;

namespace qcrash::properties {
namespace {

namespace fs = std::filesystem;

// A scratch directory, removed with everything in it.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "qcrash-qemu-XXXXXX").string();
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    if (!path_.empty()) fs::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  bool ok() const { return !path_.empty(); }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

Result<std::vector<uint8_t>> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IoError("cannot read " + path);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

Status WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  return out ? Status::Ok() : Status::IoError("cannot write " + path);
}

// A child process with its stdin and (stdout + stderr) on pipes.
class Child {
 public:
  Status Start(const std::vector<std::string>& argv) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0)
      return Status::IoError("pipe: " + std::string(std::strerror(errno)));
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, out[1], 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int rc = ::posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    to_ = in[1];
    from_ = out[0];
    if (rc != 0) {
      pid_ = -1;
      return Status::IoError("cannot run " + argv[0] + ": " + std::strerror(rc));
    }
    return Status::Ok();
  }
  ~Child() {
    if (to_ >= 0) ::close(to_);
    if (from_ >= 0) ::close(from_);
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Status Send(const std::string& text) {
    for (size_t done = 0; done < text.size();) {
      const ssize_t n = ::write(to_, text.data() + done, text.size() - done);
      if (n <= 0) return Status::IoError("the child closed its input");
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }
  // Output up to and without `marker` (or to the end, marker_seen false).
  Result<std::string> ReadUntil(const std::string& marker, bool& marker_seen, int timeout_ms) {
    marker_seen = false;
    for (;;) {
      const size_t at = buffer_.find(marker);
      if (at != std::string::npos) {
        std::string text = buffer_.substr(0, at);
        buffer_.erase(0, at + marker.size());
        marker_seen = true;
        return text;
      }
      pollfd p{from_, POLLIN, 0};
      const int ready = ::poll(&p, 1, timeout_ms);
      if (ready == 0) return Status::IoError("no answer in " + std::to_string(timeout_ms) + " ms");
      char chunk[4096];
      const ssize_t n = ::read(from_, chunk, sizeof chunk);
      if (n <= 0) {
        std::string text = std::move(buffer_);
        buffer_.clear();
        return text;
      }
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }
  // Closes its input and waits; the exit code (or 128 + signal).
  int Wait() {
    if (to_ >= 0) ::close(to_);
    to_ = -1;
    int status = 0;
    if (pid_ <= 0 || ::waitpid(pid_, &status, 0) != pid_) return -1;
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void Kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  std::string buffer_;
};

// Runs argv to its end; its output and exit code.
Result<std::pair<int, std::string>> RunToEnd(const std::vector<std::string>& argv) {
  Child child;
  QCRASH_RETURN_IF_ERROR(child.Start(argv));
  bool seen = false;
  QCRASH_ASSIGN_OR_RETURN(std::string output, child.ReadUntil(std::string(1, '\0'), seen, 600000));
  const int code = child.Wait();
  return std::make_pair(code, output);
}

std::string FirstLine(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? "(no output)" : line;
}

constexpr const char* kPrompt = "qemu-io> ";

std::string Bytes(uint64_t n) { return std::to_string(n); }

// The qemu-io command of one guest operation; `data_file` holds a write's bytes.
std::string Command(const GuestOp& op, const std::string& data_file) {
  switch (op.kind) {
    case OpKind::kWrite:
      return "write -q -s " + data_file + " " + Bytes(op.offset_bytes) + " " +
             Bytes(op.length_bytes);
    case OpKind::kWriteCompressed:
      return "write -q -c -s " + data_file + " " + Bytes(op.offset_bytes) + " " +
             Bytes(op.length_bytes);
    case OpKind::kWriteZeroes:
      return std::string("write -q -z ") + (op.may_unmap ? "-u " : "") + Bytes(op.offset_bytes) +
             " " + Bytes(op.length_bytes);
    case OpKind::kDiscard:
      return "discard -q " + Bytes(op.offset_bytes) + " " + Bytes(op.length_bytes);
    case OpKind::kFlush:
      return "flush";
    case OpKind::kResize:
      return "truncate " + Bytes(op.length_bytes);
    case OpKind::kClose:
      return "close";
    case OpKind::kRead:
      return "read -q " + Bytes(op.offset_bytes) + " " + Bytes(op.length_bytes);
    case OpKind::kSnapshotCreate:
    case OpKind::kSnapshotDelete:
    case OpKind::kSnapshotRevert:
    case OpKind::kBitmapAdd:
    case OpKind::kBitmapRemove:
    case OpKind::kBitmapClear:
    case OpKind::kBitmapEnable:
    case OpKind::kBitmapDisable:
      return "snapshot";  // qemu-io has no such command: an error line (refused before)
    case OpKind::kAmend:
      return "amend";      // likewise (refused before)
    case OpKind::kRebase:  // qemu-img's, not qemu-io's
      return "snapshot";   // qemu-io has no such command: an error line (refused before)
    case OpKind::kCommit:
      return "commit";  // qemu-io has no such command either (refused before)
  }
  return "";
}

// The blklogwrites image options: the qcow2 driver over a logging filter.
std::string ImageOpts(const QemuEngineOptions& q, const std::string& image, const std::string& log,
                      bool append) {
  std::string opts = "driver=qcow2";
  if (!q.runtime_opts.empty()) opts += "," + q.runtime_opts;
  opts += ",file.driver=blklogwrites,file.file.filename=" + image + ",file.log.filename=" + log +
          ",file.log-super-update-interval=1";
  // The log's own flushes cost an fsync per entry and order nothing that
  // is under test: the log is read once qemu-io has answered.
  opts += ",file.log.cache.no-flush=on";
  opts += append ? ",file.log-append=on" : ",file.log-sector-size=512";
  return opts;
}

Status CreateImage(const Workload& workload, const QemuEngineOptions& q, const std::string& image,
                   const ScratchDir& dir) {
  const engine::CreateOptions& c = workload.image;
  std::string o = "cluster_size=" + std::to_string(uint64_t{1} << c.cluster_bits) +
                  ",compat=" + (c.version == 2 ? "0.10" : "1.1");
  if (c.version != 2) o += ",refcount_bits=" + std::to_string(1u << c.refcount_order);
  if (c.lazy_refcounts) o += ",lazy_refcounts=on";
  if (c.compression_type != engine::CompressionType::kZlib) o += ",compression_type=zstd";
  if (c.preallocation != engine::Preallocation::kOff)
    o += std::string(",preallocation=") + engine::PreallocationName(c.preallocation);
  if (workload.backing) {
    QCRASH_RETURN_IF_ERROR(WriteFile(dir / kBackingFileName, BackingFileBytes(workload)));
    o += std::string(",backing_file=") + kBackingFileName + ",backing_fmt=raw";
  }
  if (!q.create_opts.empty()) o += "," + q.create_opts;
  QCRASH_ASSIGN_OR_RETURN(auto done, RunToEnd({q.qemu_img, "create", "-q", "-f", "qcow2", "-o", o,
                                               image, std::to_string(c.size_bytes)}));
  if (done.first != 0)
    return Status::InvalidArgument(q.qemu_img + " create -o " + o + ": " + FirstLine(done.second));
  return Status::Ok();
}

// qemu-io's answer to one command: every command runs quiet (-q) or
// prints nothing when it succeeds, so any line is an error ("" when none).
std::string ErrorIn(const std::string& answer) {
  size_t from = 0;
  while (from < answer.size()) {
    const size_t end = std::min(answer.find('\n', from), answer.size());
    const std::string line = answer.substr(from, end - from);
    if (!line.empty()) return line;
    from = end + 1;
  }
  return "";
}

}  // namespace

Result<std::string> QemuVersion(const std::string& qemu_io) {
  QCRASH_ASSIGN_OR_RETURN(auto done, RunToEnd({qemu_io, "--version"}));
  const std::string line = FirstLine(done.second);
  const size_t at = line.find("version ");
  if (done.first != 0 || at == std::string::npos)
    return Status::InvalidArgument(qemu_io + " --version: " + line);
  return line.substr(at + 8);
}

Result<WorkloadRun> RunWorkloadOnQemu(const Workload& workload, const RunOptions& given,
                                      std::vector<std::vector<uint8_t>>* after_ops) {
  QCRASH_RETURN_IF_ERROR(ValidateWorkload(workload));
  for (const GuestOp& op : workload.ops) {
    if (IsBitmapOp(op.kind))
      return Status::InvalidArgument("qemu-io has no persistent bitmap command (" + DescribeOp(op) +
                                     ")");
    if (IsSnapshotOp(op.kind))
      return Status::InvalidArgument("qemu-io has no internal snapshot command (" + DescribeOp(op) +
                                     ")");
    if (IsAmendOp(op.kind))
      return Status::InvalidArgument("qemu-io has no amend command (" + DescribeOp(op) + ")");
    if (op.kind == OpKind::kRebase)
      return Status::InvalidArgument("qemu-io has no rebase command (" + DescribeOp(op) + ")");
    if (op.kind == OpKind::kCommit)
      return Status::InvalidArgument(
          "qemu-io has no commit command, and blklogwrites logs the image file alone, not the "
          "backing file a commit writes (" +
          DescribeOp(op) + ")");
  }
  if (!workload.image.data_file.empty()) {
    // blklogwrites logs one file: the data file's writes would go unlogged.
    return Status::NotSupported(
        "a workload with an external data file runs on qcrash's engine only (blklogwrites logs "
        "the image file alone)");
  }
  const QemuEngineOptions& q = *given.qemu;
  ScratchDir dir;
  if (!dir.ok()) return Status::IoError("cannot make a scratch directory");
  const std::string image = dir / "image.qcow2", log = dir / "log.bin";
  QCRASH_RETURN_IF_ERROR(CreateImage(workload, q, image, dir));
  QCRASH_ASSIGN_OR_RETURN(std::vector<uint8_t> created, ReadFile(image));
  if (given.junk_free_clusters > 0) {
    AppendJunkClusters(created, uint64_t{1} << workload.image.cluster_bits,
                       given.junk_free_clusters);
    QCRASH_RETURN_IF_ERROR(WriteFile(image, created));
  }
  QCRASH_RETURN_IF_ERROR(WriteFile(log, {}));

  WorkloadRun run;
  run.engine = "qemu";
  run.workload = workload;
  run.options = WithBacking(workload, given);
  // QEMU writes a new cluster's data and its L2 entry with no flush between:
  // a pointer that lands before its data shows the cluster's old bytes, the
  // stale-data verdict, not a violation (DESIGN.md, the 2010 thread).
  run.options.open.data_ordering = engine::DataOrdering::kQemu;
  run.initial = std::make_shared<const sim::ChunkedImage>(sim::ChunkedImage::FromBytes(created));

  Child qemu;
  QCRASH_RETURN_IF_ERROR(
      qemu.Start({q.qemu_io, "-t", q.cache, "--image-opts", ImageOpts(q, image, log, false)}));
  bool prompt = false;
  QCRASH_ASSIGN_OR_RETURN(std::string banner, qemu.ReadUntil(kPrompt, prompt, 60000));
  if (!prompt) {
    return Status::InvalidArgument(q.qemu_io + " -t " + q.cache + " --image-opts " +
                                   ImageOpts(q, image, log, false) + ": " + FirstLine(banner));
  }
  std::vector<uint64_t> entries_after;  // the log's entry count after each operation
  const std::string data_file = dir / "data.bin";
  bool open = true;
  // QCRASH_QEMU_TRACE=1: the conversation with qemu-io on stderr.
  const bool trace = std::getenv("QCRASH_QEMU_TRACE") != nullptr;
  for (size_t i = 0; i < workload.ops.size(); ++i) {
    const GuestOp& op = workload.ops[i];
    // One command, then its answer, up to the next prompt.
    auto ask = [&](const std::string& command, std::string& answer) -> Status {
      if (trace) std::fprintf(stderr, "qemu-io< %s", command.c_str());
      QCRASH_RETURN_IF_ERROR(qemu.Send(command));
      QCRASH_ASSIGN_OR_RETURN(answer, qemu.ReadUntil(kPrompt, prompt, 120000));
      if (trace)
        std::fprintf(stderr, "qemu-io> [%s]%s\n", answer.c_str(), prompt ? "" : " (no prompt)");
      return Status::Ok();
    };
    std::string answer;
    if (!open) {
      // Under --image-opts, open takes the options as its argument.
      QCRASH_RETURN_IF_ERROR(
          ask("open -t " + q.cache + " " + ImageOpts(q, image, log, true) + "\n", answer));
      open = true;
    }
    if (WritesData(op.kind)) {
      std::vector<uint8_t> bytes(op.length_bytes);
      FillOpBytes(i + 1, op.offset_bytes, bytes);
      QCRASH_RETURN_IF_ERROR(WriteFile(data_file, bytes));
    }
    if (answer.empty() && prompt) {
      QCRASH_RETURN_IF_ERROR(ask(Command(op, data_file) + "\n", answer));
    }
    QCRASH_ASSIGN_OR_RETURN(uint64_t entries, sim::DmLogEntryCount(log));
    entries_after.push_back(entries);
    if (after_ops) {
      QCRASH_ASSIGN_OR_RETURN(std::vector<uint8_t> now, ReadFile(image));
      after_ops->push_back(std::move(now));
    }
    const std::string error = prompt ? ErrorIn(answer) : FirstLine(answer);
    if (!error.empty()) {
      run.workload_status =
          Status::IoError("qemu-io: " + error)
              .WithContext("operation " + std::to_string(i) + " (" + DescribeOp(op) + ")");
      break;
    }
    if (op.kind == OpKind::kClose) open = false;
  }
  // A workload that ends without a close ends as a crash does: qemu-io is
  // killed, so nothing it would write at exit reaches the log.
  if (open) {
    qemu.Kill();
  } else {
    QCRASH_RETURN_IF_ERROR(qemu.Send("quit\n"));
    qemu.Wait();
  }
  QCRASH_ASSIGN_OR_RETURN(sim::DmLogImport imported, sim::ImportDmLogFile(log, created.size()));
  auto records_at = [&](uint64_t entries) -> uint64_t {
    if (entries == 0) return 0;
    return entries <= imported.records_after.size() ? imported.records_after[entries - 1]
                                                    : imported.log.size();
  };
  uint64_t start = 0;
  for (const uint64_t entries : entries_after) {
    const uint64_t end = records_at(entries);
    run.spans.push_back({start, end});
    start = end;
  }
  for (const GuestOp& op : workload.ops) {
    if (WritesData(op.kind) || op.kind == OpKind::kWriteZeroes || op.kind == OpKind::kDiscard)
      ++run.stats.guest_writes;
    if (op.kind == OpKind::kFlush) ++run.stats.guest_flushes;
  }
  for (const sim::LogRecord& r : imported.log.records()) {
    if (r.kind == sim::RecordKind::kFlush) ++run.stats.device_flushes;
  }
  run.log = std::make_shared<const sim::WriteLog>(std::move(imported.log));
  run.timeline = std::make_shared<const sim::CrashTimeline>(run.initial, run.log, given.non_atomic);
  return run;
}

Result<WorkloadRun> RunFromDmLog(const std::string& log_path, const std::string& base_path) {
  QCRASH_ASSIGN_OR_RETURN(std::vector<uint8_t> base, ReadFile(base_path));
  if (base.size() < 32 || LoadBe32(base.data()) != 0x514649fb)
    return Status::InvalidArgument(base_path + ": not a qcow2 image (no QFI magic at offset 0)");
  QCRASH_ASSIGN_OR_RETURN(sim::DmLogImport imported, sim::ImportDmLogFile(log_path, base.size()));
  WorkloadRun run;
  run.engine = "log";
  run.structural_only = true;
  run.workload.name = "log:" + fs::path(log_path).filename().string();
  run.workload.image.size_bytes = LoadBe64(base.data() + 24);
  run.initial = std::make_shared<const sim::ChunkedImage>(sim::ChunkedImage::FromBytes(base));
  uint64_t start = 0;
  for (const sim::DmLogMark& mark : imported.marks) {
    run.spans.push_back({start, mark.records});
    run.span_labels.push_back("mark " + mark.name);
    start = mark.records;
  }
  run.log = std::make_shared<const sim::WriteLog>(std::move(imported.log));
  run.timeline =
      std::make_shared<const sim::CrashTimeline>(run.initial, run.log, sim::NonAtomicOptions{});
  return run;
}

Result<QemuCheck> QemuImgCheck(const std::string& qemu_img, const std::string& path) {
  // -U: a crash image is nobody's; no lock is needed to read it.
  QCRASH_ASSIGN_OR_RETURN(
      auto done, RunToEnd({qemu_img, "check", "-U", "--output=json", "-f", "qcow2", path}));
  QemuCheck check;
  check.exit_code = done.first;
  check.output = done.second;
  const size_t brace = done.second.find('{');
  if (brace != std::string::npos) {
    auto json = nlohmann::json::parse(done.second.substr(brace), nullptr, false);
    if (json.is_object()) {
      check.corruptions = json.value("corruptions", uint64_t{0});
      check.leaks = json.value("leaks", uint64_t{0});
      check.check_errors = json.value("check-errors", uint64_t{0});
    }
  }
  return check;
}

}  // namespace qcrash::properties
