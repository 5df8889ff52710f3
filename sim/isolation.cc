// RunIsolated: fork, a shared-memory write log, and the kill. The one sim/
// file that uses Boost.Interprocess (STYLE.md habit 14).
#include "sim/isolation.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/anonymous_shared_memory.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <chrono>
#include <cstring>
#include <new>

namespace qcrash::sim {
namespace {

namespace bip = boost::interprocess;

// The start of the segment; the encoded log (header, then records) follows.
struct SharedLogHeader {
  std::atomic<uint64_t> committed_bytes;  // bytes of whole records after this header
  std::atomic<uint64_t> record_count;
  std::atomic<uint32_t> overflowed;
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "the child may die mid-update");

// Appends encoded records to the segment. The child writes the bytes first
// and only then publishes the new length, so a SIGKILL between the two leaves
// the parent a log of whole records.
class SharedLogSink final : public LogSink {
 public:
  SharedLogSink(SharedLogHeader* header, uint8_t* data, uint64_t capacity_bytes)
      : header_(header), data_(data), capacity_bytes_(capacity_bytes) {}

  Status Append(RecordKind kind, uint64_t offset_bytes, std::span<const uint8_t> data) override {
    scratch_.clear();
    WriteLog::EncodeRecord(kind, offset_bytes, data, &scratch_);
    const uint64_t used = header_->committed_bytes.load(std::memory_order_relaxed);
    if (scratch_.size() > capacity_bytes_ - used) {
      header_->overflowed.store(1, std::memory_order_release);
      return Status::NoSpace("isolated run: the shared write log is full");
    }
    std::memcpy(data_ + used, scratch_.data(), scratch_.size());
    header_->record_count.fetch_add(1, std::memory_order_relaxed);
    header_->committed_bytes.store(used + scratch_.size(), std::memory_order_release);
    return Status::Ok();
  }

 private:
  SharedLogHeader* header_;
  uint8_t* data_;
  uint64_t capacity_bytes_;
  std::vector<uint8_t> scratch_;
};

uint64_t KillDelayMicros(const IsolationOptions& isolation) {
  if (isolation.kill_within_micros == 0) return ~uint64_t{0};
  uint64_t z = isolation.seed + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return (z ^ (z >> 31)) % (isolation.kill_within_micros + 1);
}

[[noreturn]] void RunChild(const SimDiskOptions& options,
                           std::shared_ptr<const ChunkedImage> initial,
                           const std::function<Status(SimDisk&)>& workload, SharedLogSink* sink) {
  SimDisk disk(options, std::move(initial));
  disk.set_sink(sink);
  const Status status = workload(disk);
  // _exit: the child must not run the parent's atexit handlers (gtest, ...).
  ::_exit(status.ok() ? 0 : 1);
}

// Waits for the child, killing it on the count, the timer or the timeout.
void SuperviseChild(pid_t child, const SharedLogHeader* header, const IsolationOptions& isolation,
                    IsolatedRun* run) {
  const auto start = std::chrono::steady_clock::now();
  const uint64_t kill_delay_micros = KillDelayMicros(isolation);
  int wait_status = 0;
  while (true) {
    const pid_t done = ::waitpid(child, &wait_status, WNOHANG);
    if (done == child) break;
    const uint64_t elapsed_micros =
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                  std::chrono::steady_clock::now() - start)
                                  .count());
    const bool by_count =
        isolation.kill_after_records != 0 &&
        header->record_count.load(std::memory_order_acquire) >= isolation.kill_after_records;
    const bool by_timer = elapsed_micros >= kill_delay_micros;
    const bool by_timeout = elapsed_micros >= isolation.timeout_millis * 1000;
    if (!run->killed_by_parent && (by_count || by_timer || by_timeout)) {
      ::kill(child, SIGKILL);
      run->killed_by_parent = true;
      run->timed_out = by_timeout && !by_count && !by_timer;
      continue;
    }
    const timespec pause = {0, 20000};  // 20 us: the kill lands near the asked instant
    ::nanosleep(&pause, nullptr);
  }
  if (WIFEXITED(wait_status)) run->exit_code = WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) run->signal = WTERMSIG(wait_status);
}

}  // namespace

Result<IsolatedRun> RunIsolated(const SimDiskOptions& options,
                                std::shared_ptr<const ChunkedImage> initial,
                                const std::function<Status(SimDisk&)>& workload,
                                const IsolationOptions& isolation) {
  if (!initial) initial = std::make_shared<const ChunkedImage>(options.initial_size_bytes);
  const uint64_t header_bytes = (sizeof(SharedLogHeader) + 63) / 64 * 64;
  bip::mapped_region region;
  try {
    // Anonymous shared memory: inherited by the child, gone with both processes.
    region = bip::anonymous_shared_memory(header_bytes + isolation.log_capacity_bytes);
  } catch (const bip::interprocess_exception& error) {
    return Status::IoError(std::string("isolated run: shared memory: ") + error.what());
  }
  auto* base = static_cast<uint8_t*>(region.get_address());
  auto* header = new (base) SharedLogHeader{};
  uint8_t* data = base + header_bytes;
  std::vector<uint8_t> log_header;
  WriteLog::EncodeHeader(options.sector_bytes, initial->SizeBytes(), kLogStreamedCount,
                         &log_header);
  if (log_header.size() > isolation.log_capacity_bytes) {
    return Status::InvalidArgument("isolated run: log capacity below the log header");
  }
  std::memcpy(data, log_header.data(), log_header.size());
  header->committed_bytes.store(log_header.size(), std::memory_order_release);
  SharedLogSink sink(header, data, isolation.log_capacity_bytes);

  const pid_t child = ::fork();
  if (child < 0) return Status::IoError("isolated run: fork failed");
  if (child == 0) RunChild(options, initial, workload, &sink);

  IsolatedRun run;
  SuperviseChild(child, header, isolation, &run);
  run.log_overflowed = header->overflowed.load(std::memory_order_acquire) != 0;
  const uint64_t committed = header->committed_bytes.load(std::memory_order_acquire);
  auto log = WriteLog::Decode(std::span<const uint8_t>(data, committed));
  if (!log.ok()) return log.status().WithContext("isolated run: the shared log");
  run.log = std::move(log).value();
  return run;
}

}  // namespace qcrash::sim

namespace qcrash::sim {
namespace {

// One worker's slot in the results segment: a length published after the bytes.
struct WorkerSlot {
  std::atomic<uint64_t> length;  // ~0 while unset; > capacity: overflowed
};

}  // namespace

Result<std::vector<std::string>> RunForkedWorkers(uint32_t workers,
                                                  const std::function<std::string(uint32_t)>& work,
                                                  uint64_t result_capacity_bytes,
                                                  uint64_t timeout_millis) {
  const uint64_t slot_bytes = sizeof(WorkerSlot) + result_capacity_bytes;
  bip::mapped_region region(bip::anonymous_shared_memory(slot_bytes * workers));
  auto* base = static_cast<uint8_t*>(region.get_address());
  auto slot_at = [&](uint32_t i) { return reinterpret_cast<WorkerSlot*>(base + i * slot_bytes); };
  for (uint32_t i = 0; i < workers; ++i) new (slot_at(i)) WorkerSlot{~uint64_t{0}};
  std::vector<pid_t> pids;
  for (uint32_t i = 0; i < workers; ++i) {
    const pid_t pid = ::fork();
    if (pid < 0) return Status::IoError("fork failed for worker " + std::to_string(i));
    if (pid == 0) {
      const std::string result = work(i);
      WorkerSlot* slot = slot_at(i);
      if (result.size() <= result_capacity_bytes) {
        std::memcpy(reinterpret_cast<uint8_t*>(slot) + sizeof(WorkerSlot), result.data(),
                    result.size());
        slot->length.store(result.size(), std::memory_order_release);
      } else {
        slot->length.store(result_capacity_bytes + 1, std::memory_order_release);
      }
      ::_exit(0);
    }
    pids.push_back(pid);
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_millis);
  Status failure;
  for (uint32_t i = 0; i < workers; ++i) {
    int status = 0;
    for (;;) {
      const pid_t done = ::waitpid(pids[i], &status, WNOHANG);
      if (done == pids[i]) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pids[i], SIGKILL);
        ::waitpid(pids[i], &status, 0);
        if (failure.ok()) failure = Status::IoError("worker " + std::to_string(i) + " timed out");
        break;
      }
      ::usleep(2000);
    }
    if (failure.ok() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      failure = Status::IoError("worker " + std::to_string(i) + " died (status " +
                                std::to_string(status) + ")");
    }
  }
  if (!failure.ok()) return failure;
  std::vector<std::string> results;
  for (uint32_t i = 0; i < workers; ++i) {
    const uint64_t length = slot_at(i)->length.load(std::memory_order_acquire);
    if (length > result_capacity_bytes) {
      return Status::NoSpace("worker " + std::to_string(i) +
                             " produced no result or overflowed its slot");
    }
    const char* bytes = reinterpret_cast<const char*>(slot_at(i)) + sizeof(WorkerSlot);
    results.emplace_back(bytes, length);
  }
  return results;
}

}  // namespace qcrash::sim
