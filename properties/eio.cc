// I/O-error cases and their check (invariant I13).
#include "properties/eio.h"

#include <charconv>
#include <cstdio>

#include "engine/memory_device.h"
#include "properties/oracle.h"

namespace qcrash::properties {
namespace {

constexpr const char* kOpNames[] = {"read", "write", "flush"};

std::vector<uint8_t> Bytes(const sim::ChunkedImage& image) {
  std::vector<uint8_t> bytes(image.SizeBytes());
  image.Read(0, bytes);
  return bytes;
}

constexpr std::string_view kBackingRead = "backing-read";

RunOptions WithError(RunOptions options, const IoErrorCase& c) {
  if (c.backing) {
    options.backing_read_error = c.nth;
  } else {
    options.io_errors.rules = {{.op = c.op, .nth_op = c.nth}};
  }
  return options;
}

std::string RequestName(const IoErrorCase& c) {
  return c.backing ? std::string(kBackingRead) : kOpNames[static_cast<size_t>(c.op)];
}

}  // namespace

std::string FormatIoErrorCase(const IoErrorCase& c) {
  return "eio:" + RequestName(c) + "#" + std::to_string(c.nth);
}

bool IsIoErrorStateId(std::string_view id) { return id.starts_with("eio:"); }

Result<IoErrorCase> ParseIoErrorCase(std::string_view id) {
  const std::string_view text = id;
  if (!IsIoErrorStateId(id)) return Status::InvalidArgument("not an eio state: " + std::string(id));
  id.remove_prefix(4);
  const size_t hash = id.find('#');
  IoErrorCase c;
  bool known = false;
  if (hash != std::string_view::npos && id.substr(0, hash) == kBackingRead) {
    c.op = sim::IoOp::kRead;
    c.backing = true;
    known = true;
  }
  for (size_t k = 0; k < 3 && hash != std::string_view::npos; ++k) {
    if (id.substr(0, hash) == kOpNames[k]) {
      c.op = static_cast<sim::IoOp>(k);
      known = true;
    }
  }
  const std::string_view number = known ? id.substr(hash + 1) : std::string_view();
  const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), c.nth);
  if (!known || error != std::errc() || end != number.data() + number.size() || c.nth == 0) {
    return Status::InvalidArgument(
        "bad eio state '" + std::string(text) +
        "': want eio:read#N, eio:write#N, eio:flush#N or eio:backing-read#N (N >= 1)");
  }
  return c;
}

std::vector<IoErrorCase> IoErrorCases(const WorkloadRun& clean_run) {
  std::vector<IoErrorCase> cases;
  for (const sim::IoOp op : {sim::IoOp::kFlush, sim::IoOp::kWrite, sim::IoOp::kRead}) {
    for (uint64_t n = 1; n <= clean_run.device_requests[static_cast<size_t>(op)]; ++n)
      cases.push_back({op, n});
  }
  for (uint64_t n = 1; n <= clean_run.backing_reads; ++n)
    cases.push_back({sim::IoOp::kRead, n, true});
  return cases;
}

Result<IoErrorOutcome> CheckIoErrorCase(const Workload& workload, const RunOptions& options,
                                        const IoErrorCase& c) {
  QCRASH_ASSIGN_OR_RETURN(WorkloadRun run, RunWorkload(workload, WithError(options, c)));
  IoErrorOutcome outcome;
  outcome.fired = run.io_error_op >= 0;
  StateResult& result = outcome.result;
  if (!outcome.fired) return outcome;
  const size_t op = static_cast<size_t>(run.io_error_op);
  outcome.op_class = run.opened ? OpKindName(workload.ops[op].kind) : "open";
  const std::string where =
      !run.opened ? "the open"
                  : "operation " + std::to_string(op) + " (" + DescribeOp(workload.ops[op]) + ")";
  const std::string what = FormatIoErrorCase(c) + " (EIO on " + RequestName(c) + " request " +
                           std::to_string(c.nth) + ", during " + where + ")";
  // The guest operation that met the error must fail: the run stops at
  // its first failed operation, so that is the last one run.
  const size_t failed = run.spans.size() - 1;
  if (run.workload_status.ok() || failed != op) {
    result.verdict = Verdict::kDataLoss;
    result.violations.push_back(
        {"I13", what + " was not reported to the guest: the operation succeeded"});
    return outcome;
  }
  // The guest gave up and closed the image; recover what the disk holds as
  // a crash image past the end of the log (the close wrote after it): the
  // failed operation acknowledged nothing but was issued (old-or-new), and
  // everything flushed before it must be intact.
  MemoryDevice disk(Bytes(*run.after_close));
  std::unique_ptr<MemoryDevice> data_file;
  if (run.after_close_data)
    data_file = std::make_unique<MemoryDevice>(Bytes(*run.after_close_data));
  const GuestOracle oracle(run);
  const uint64_t end = run.timeline->PointCount();
  result = RecoverImage(disk, run, oracle, end, data_file.get());
  for (Violation& v : result.violations) {
    v.message =
        "after " + what + " and a close" +
        (run.close_status.ok() ? "" : " (which failed: " + run.close_status.ToString() + ")") +
        ": " + v.invariant + ": " + v.message;
    v.invariant = "I13";
  }
  return outcome;
}

}  // namespace qcrash::properties
