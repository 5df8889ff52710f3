// RunSuite: the built-in workloads first (the seeds' scenarios, every
// deterministic enumerator), then generated workloads until the budget ends.
#include "properties/suite.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>

#include "engine/check.h"
#include "engine/memory_device.h"
#include "properties/generate.h"

namespace qcrash::properties {
namespace {

using Clock = std::chrono::steady_clock;

struct PolicyVariant {
  engine::OrderingPolicy policy;
  bool scan_recovery = false;  // the journal with scan-only recovery (Stefan's proposal)
  bool repair_only = false;    // the repair pass: recovery of unsafe crash states
  bool qemu_order = false;     // QEMU's data ordering: no flush between data and its L2 entry
  bool corrupt = false;        // the corrupt-start pass: repair of a corrupted image, crashed
  std::string Label() const {
    return std::string(engine::PolicyName(policy)) + (scan_recovery ? "/scan" : "") +
           (repair_only ? "/repair" : "") + (qemu_order ? "/qemu" : "") +
           (corrupt ? "/corrupt" : "");
  }
};

std::vector<PolicyVariant> Variants(const SuiteConfig& config) {
  std::vector<engine::OrderingPolicy> policies = config.policies;
  if (policies.empty()) {
    policies = {engine::OrderingPolicy::kWritethrough, engine::OrderingPolicy::kOrdered,
                engine::OrderingPolicy::kLazy, engine::OrderingPolicy::kExtent,
                engine::OrderingPolicy::kJournal};
  }
  std::vector<PolicyVariant> out;
  for (const engine::OrderingPolicy p : policies) {
    out.push_back({p, false});
    if (p == engine::OrderingPolicy::kJournal) out.push_back({p, true});
  }
  return out;
}

bool NeedsV3(engine::OrderingPolicy p) {
  return p == engine::OrderingPolicy::kLazy || p == engine::OrderingPolicy::kJournal;
}

// Whether the suite runs built-in `workload` under `v`. refcount-table-growth
// is left out under writethrough: a flush after every one of its 5,000
// metadata writes makes its log (and run) five times longer than under any
// other policy, for a growth path writethrough orders by flushing anyway.
bool Runs(const std::string& name, const Workload& workload, engine::OrderingPolicy p,
          bool policy_asked) {
  if (workload.image.version < 3 && NeedsV3(p)) return false;
  // The engine writes no snapshot and keeps no bitmap under the journal
  // policy yet (issue 15).
  // Nor a compressed cluster.
  const bool snapshots =
      std::any_of(workload.ops.begin(), workload.ops.end(), [](const GuestOp& op) {
        return IsSnapshotOp(op.kind) || IsBitmapOp(op.kind) || IsCompressedOp(op.kind);
      });
  if (snapshots && p == engine::OrderingPolicy::kJournal) return false;
  // The engine amends nothing under the journal policy (its transactions
  // would be bypassed by the header rewrites), and the lazy policy cannot
  // hold a compat=0.10 image open.
  for (const GuestOp& op : workload.ops) {
    if (IsAmendOp(op.kind) && p == engine::OrderingPolicy::kJournal) return false;
    if (IsAmendOp(op.kind) && op.amend.version == 2 && p == engine::OrderingPolicy::kLazy) {
      return false;
    }
  }
  return policy_asked || name != "refcount-table-growth" ||
         p != engine::OrderingPolicy::kWritethrough;
}

// The journal ring the suite gives built-in `name` under the journal with
// header bookkeeping: the two journal workloads get a ring small enough to
// wrap (16 KiB), so that reusing ring space is tested at all; the rest the
// default (1 MiB). Scan-only recovery keeps the default: at 16 KiB it has
// a known open finding (docs/journal-variants.md), which the crash gate
// tracks.
uint64_t SuiteJournalRing(const std::string& name) {
  return name == "journal-wrap" || name == "2013-journal-revoke"
             ? uint64_t{16} << 10
             : engine::JournalOptions{}.size_bytes;
}

// States every built-in cell checks whatever its time share (see run_cell):
// an eio case reruns the whole workload, so fewer of those.
constexpr uint64_t kBuiltinStatesMin = 50;
constexpr uint64_t kBuiltinEioCasesMin = 10;

// The data pass: each crash point's data sectors in every combination (at
// most this many per point), metadata at latest. With deduplication a state
// costs a lookup, so the pass covers millions of states in its share: every
// way the guest's unflushed data can land under the metadata that names it.
constexpr const char* kDataEnumerator = "data:65536";

// Shares of the budget: the built-in passes up to 50%, the data pass up to
// 60% (its 10% and what the built-ins left), the generated workloads the
// rest (40%, as before the data pass).
constexpr double kBuiltinShare = 0.50;
constexpr double kDataShare = 0.60;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

size_t SuiteReport::failed_cells() const {
  size_t n = 0;
  for (const SuiteCell& c : cells) n += c.failed();
  return n;
}

std::string CheckCleanClose(const Workload& workload, const RunOptions& given) {
  if (workload.ops.empty() || workload.ops.back().kind != OpKind::kClose) return "";
  RunOptions run = WithBacking(workload, given);
  MemoryDevice device;
  MemoryDevice data_file(std::vector<uint8_t>(workload.image.size_bytes));
  engine::OpenOptions create_open;
  if (!workload.image.data_file.empty()) {
    create_open.open_data_file = DataFileOpenerFor(data_file);
    run.open.open_data_file = create_open.open_data_file;
  }
  if (run.open.policy == engine::OrderingPolicy::kJournal) {
    create_open.policy = run.open.policy;
    create_open.journal = run.open.journal;
    create_open.faults = run.open.faults;
    create_open.open_data_file = run.open.open_data_file;
  }
  {
    auto created = engine::Image::Create(device, workload.image, create_open);
    if (!created.ok()) return "create: " + created.status().ToString();
    if (Status closed = (*created)->Close(); !closed.ok()) return "create: " + closed.ToString();
  }
  {
    auto image = engine::Image::Open(device, run.open);
    if (!image.ok()) return "open: " + image.status().ToString();
    for (size_t i = 0; i < workload.ops.size(); ++i) {
      if (i > 0 && workload.ops[i - 1].kind == OpKind::kClose) {
        image->reset();  // a new session, as RunWorkload runs it
        image = engine::Image::Open(device, run.open);
        if (!image.ok()) return "";  // a workload error: reported apart
      }
      if (Status s = RunGuestOp(**image, workload.ops[i], i + 1); !s.ok())
        return "";  // a workload error: reported apart
    }
  }
  auto report = engine::CheckImage(device, {engine::RepairMode::kNone});
  if (!report.ok()) return "check after a clean close failed: " + report.status().ToString();
  if (report->leaks == 0 && report->corruptions == 0) return "";
  std::string first;
  for (const engine::Finding& f : report->findings) {
    first = f.message;
    break;
  }
  return "a clean close left " + std::to_string(report->leaks) + " leaked clusters and " +
         std::to_string(report->corruptions) + " corruptions (" + first + ")";
}

Result<SuiteReport> RunSuite(const SuiteConfig& config, const SuiteProgressFn& progress) {
  const Clock::time_point start = Clock::now();
  SuiteReport suite;
  const std::vector<PolicyVariant> variants = Variants(config);
  auto over_budget = [&] {
    return config.budget_seconds > 0 && Since(start) >= config.budget_seconds;
  };
  // The built-in passes stop at their share (set below), so that generated
  // workloads, which reach what no built-in was written for, always run.
  Clock::time_point builtin_deadline = start;
  auto builtins_over_budget = [&] {
    return config.budget_seconds > 0 && Clock::now() >= builtin_deadline;
  };
  // The built-in cells share 50% of the budget: each gets the time left
  // divided by the cells left, so the time a cheap cell leaves unused goes
  // to the cells after it (set once the cells are counted, below).
  size_t builtin_cells_left = 0;
  auto run_cell = [&](const std::string& workload_name, const PolicyVariant& v,
                      ExploreConfig explore, const std::string& enumerator) -> Status {
    SuiteCell cell;
    cell.workload = workload_name;
    cell.policy = v.Label();
    cell.enumerator = enumerator;
    // eio is no crash enumerator: each device request fails in turn (properties/eio.h).
    explore.io_errors = enumerator == "eio";
    QCRASH_ASSIGN_OR_RETURN(explore.enumerator,
                            sim::ParseEnumeratorSpec(explore.io_errors ? "prefix" : enumerator));
    explore.stop_at_first_violation = true;
    explore.minimize = false;
    explore.dedup = config.dedup;
    if (builtin_cells_left > 0) {
      const double left = std::chrono::duration<double>(builtin_deadline - Clock::now()).count();
      explore.budget_seconds = std::max(0.001, left / static_cast<double>(builtin_cells_left--));
      // A floor, so that a loaded machine still reaches the first states of
      // each cell, where the in-order enumerators put the likeliest breaks
      // (the two refcount-growth workloads cost ~10 ms a state: no floor).
      if (workload_name.rfind("refcount-", 0) != 0)
        explore.states_min = explore.io_errors ? kBuiltinEioCasesMin : kBuiltinStatesMin;
    }
    // A stride reaches late crash points under a cap; epochs and
    // bounded-ends put the states most likely to break first (epochs that
    // write the header, and there the header sector's versions), so a cap
    // takes them in order.
    explore.stride_to_cap = enumerator != "epochs" && enumerator.rfind("bounded-ends", 0) != 0;
    explore.stride_offset = config.seed;
    QCRASH_ASSIGN_OR_RETURN(cell.report, Explore(explore));
    cell.enumerator = cell.report.enumerator;  // with the stride's shard, when one was taken
    if (!cell.report.workload_error.empty())
      cell.failure = "workload stopped: " + cell.report.workload_error;
    cell.config = std::move(explore);
    // The shared run stays with the caller: a minimization of this cell runs
    // other workloads and must not find it.
    cell.config.prepared.reset();
    suite.states_checked += cell.report.states_checked;
    suite.recoveries_run += cell.report.recoveries_run;
    cell.finished_at_seconds = Since(start);
    if (cell.failed() && suite.first_failure_seconds < 0)
      suite.first_failure_seconds = Since(start);
    suite.cells.push_back(std::move(cell));
    if (progress) progress(suite);
    return Status::Ok();
  };
  // The clean close is a property of the workload run, not of a crash
  // state: one cell of its own (enumerator "close") when it fails.
  auto check_close = [&](const std::string& workload_name, const PolicyVariant& v,
                         const ExploreConfig& explore) {
    const std::string failure = CheckCleanClose(explore.workload, explore.run);
    if (failure.empty()) return;
    SuiteCell cell;
    cell.workload = workload_name;
    cell.policy = v.Label();
    cell.enumerator = "close";
    cell.config = explore;
    cell.failure = failure;
    cell.finished_at_seconds = Since(start);
    if (suite.first_failure_seconds < 0) suite.first_failure_seconds = Since(start);
    suite.cells.push_back(std::move(cell));
  };

  // Enumerator by enumerator across every built-in workload and policy, so
  // that a short budget still covers each workload with the cheap ones.
  std::vector<std::pair<std::string, Workload>> builtins;
  for (const std::string& name : BuiltinWorkloadNames()) {
    if (config.skip_costly && name == "refcount-table-growth") continue;
    QCRASH_ASSIGN_OR_RETURN(Workload workload, BuiltinWorkload(name));
    builtins.emplace_back(name, std::move(workload));
  }
  suite.builtin_workloads = builtins.size();
  // The built-ins get at most 50% of the budget, shared out per cell, so a
  // costly workload (refcount-growth checks a 2.5 MiB image per state) cannot
  // starve the rest; generated workloads get what is left.
  size_t builtin_cells = 0;  // an estimate: the passes below, per workload and policy
  for (const auto& [name, workload] : builtins) {
    for (const PolicyVariant& v : variants)
      builtin_cells += Runs(name, workload, v.policy, !config.policies.empty());
  }
  const size_t pairs = builtin_cells;  // the data pass: one cell per workload and policy
  builtin_cells *= 10;
  // The repair pass: one cell per built-in workload (see below).
  const bool repair_pass = config.policies.empty();
  if (repair_pass) builtin_cells += builtins.size() + 4 * kCorruptionCount;
  if (config.budget_seconds > 0) {
    builtin_cells_left = builtin_cells;
    builtin_deadline =
        start + std::chrono::duration_cast<Clock::duration>(
                    std::chrono::duration<double>(kBuiltinShare * config.budget_seconds));
  }
  // The repair pass: crash states of the unsafe policy are corrupt by
  // design, so repair meets dangling pointers and refcounts too low there,
  // and rebuilds refcount structures, which no safe policy's crash makes
  // it do. Each state's recovery is crashed in turn: recovery alone is held
  // to account (I3, I7, and I8 with repair's own ordering: no crash inside
  // it may leave the image worse than it found it).
  auto run_repair_pass = [&]() -> Status {
    for (size_t w = 0; repair_pass && w < builtins.size(); ++w) {
      if (builtins_over_budget()) {
        suite.budget_exhausted = true;
        break;
      }
      const auto& [name, workload] = builtins[w];
      const PolicyVariant v{engine::OrderingPolicy::kUnsafe, false, true};
      ExploreConfig explore;
      explore.workload = workload;
      explore.run.open.policy = v.policy;
      explore.run.open.faults = config.bugs;
      explore.run.open.l2_cache_tables = 2;
      explore.states_max = std::max<uint64_t>(1, config.builtin_states / 20);
      explore.recovery.nested_enumerator = "epochs";
      explore.recovery.nested_states_max = 32;
      explore.recovery.recovery_invariants_only = true;
      QCRASH_ASSIGN_OR_RETURN(WorkloadRun run, RunWorkload(explore.workload, explore.run));
      explore.prepared = std::make_shared<const WorkloadRun>(std::move(run));
      QCRASH_RETURN_IF_ERROR(run_cell(name, v, explore, "drop-one"));
      suite.cells.back().enumerator += "+nested:epochs";
    }
    return Status::Ok();
  };

  // The corrupt-start pass: the repair pass meets what an unsafe crash
  // leaves, mostly refcounts too low, which a rebuild fixes; this one meets
  // each corruption class of properties/corruptions.h on the image a
  // built-in workload leaves after a clean close (a dangling pointer, a
  // shared cluster, a wrong OFLAG_COPIED, refcounts one off, a leak, a
  // pointer into metadata, ...), so repair's other steps (table edits,
  // refcount fixes, COPIED fixes, the header bits) are crashed too: every
  // crash state of the repair (epochs) must be no worse than the corrupt
  // image (I8). A class that does not apply to an image is no cell.
  auto run_corrupt_pass = [&]() -> Status {
    for (const char* name : {"default", "free-reuse", "unaligned", "v2"}) {
      const auto found = std::find_if(builtins.begin(), builtins.end(),
                                      [&](const auto& b) { return b.first == name; });
      if (!repair_pass || found == builtins.end()) continue;
      for (int k = 0; k < kCorruptionCount; ++k) {
        if (builtins_over_budget()) {
          suite.budget_exhausted = true;
          return Status::Ok();
        }
        const PolicyVariant v{engine::OrderingPolicy::kOrdered, false, false, false, true};
        ExploreConfig explore;
        explore.workload = found->second;
        explore.run.open.policy = v.policy;
        explore.run.open.faults = config.bugs;
        explore.run.open.l2_cache_tables = 2;
        explore.run.corruption = static_cast<Corruption>(k);
        explore.run.corruption_choice = config.seed;
        explore.recovery.nested_enumerator = "epochs";
        explore.recovery.nested_states_max = 4096;
        explore.recovery.recovery_invariants_only = true;
        auto run = RunWorkload(explore.workload, explore.run);
        if (!run.ok()) continue;  // the class does not apply to this image
        explore.prepared = std::make_shared<const WorkloadRun>(std::move(run).value());
        QCRASH_RETURN_IF_ERROR(run_cell(name, v, explore, "prefix"));
        suite.cells.back().enumerator =
            std::string("corrupt:") + CorruptionName(static_cast<Corruption>(k)) + "+nested:epochs";
      }
    }
    return Status::Ok();
  };

  // The qemu-order pass: QEMU's own data ordering writes an allocating
  // write's L2 entry with no flush after its data, so a missing barrier
  // elsewhere (the lazy dirty bit, a header switch) is not hidden by the
  // data-before-pointer flush the strict ordering issues: each built-in
  // workload again, under every policy but the scan-only journal, through
  // epochs and bounded-ends:2 (I5 there is the stale-data-exposed verdict).
  auto run_qemu_order_pass = [&]() -> Status {
    for (size_t w = 0; w < builtins.size(); ++w) {
      const auto& [name, workload] = builtins[w];
      for (PolicyVariant v : variants) {
        if (v.scan_recovery || !Runs(name, workload, v.policy, !config.policies.empty())) continue;
        if (builtins_over_budget()) {
          suite.budget_exhausted = true;
          return Status::Ok();
        }
        v.qemu_order = true;
        ExploreConfig explore;
        explore.workload = workload;
        explore.run.open.policy = v.policy;
        explore.run.open.faults = config.bugs;
        explore.run.open.l2_cache_tables = 2;
        explore.run.open.data_ordering = engine::DataOrdering::kQemu;
        explore.run.open.journal.size_bytes = SuiteJournalRing(name);
        explore.states_max = std::max<uint64_t>(1, config.builtin_states / 2);
        QCRASH_ASSIGN_OR_RETURN(WorkloadRun run, RunWorkload(explore.workload, explore.run));
        explore.prepared = std::make_shared<const WorkloadRun>(std::move(run));
        for (const char* e : {"epochs", "bounded-ends:2"})
          QCRASH_RETURN_IF_ERROR(run_cell(name, v, explore, e));
      }
    }
    return Status::Ok();
  };

  // Each workload runs once per policy; its write log serves every enumerator.
  std::map<std::pair<size_t, size_t>, ExploreConfig> prepared;
  auto prepare = [&](size_t w, size_t vi) -> Result<ExploreConfig> {
    const auto& [name, workload] = builtins[w];
    const PolicyVariant& v = variants[vi];
    auto [it, fresh] = prepared.try_emplace({w, vi});
    ExploreConfig& explore = it->second;
    if (fresh) {
      explore.workload = workload;
      explore.run.open.policy = v.policy;
      explore.run.open.faults = config.bugs;
      explore.run.open.l2_cache_tables = 2;  // every few writes evict
      if (v.scan_recovery) {
        explore.run.open.journal.recovery = engine::JournalRecovery::kScanOnly;
      } else {
        explore.run.open.journal.size_bytes = SuiteJournalRing(name);
      }
      explore.states_max = config.builtin_states;
      auto run = RunWorkload(explore.workload, explore.run);
      if (!run.ok()) {
        prepared.erase(it);
        return run.status();
      }
      explore.prepared = std::make_shared<const WorkloadRun>(std::move(run).value());
      check_close(name, v, explore);
    }
    return explore;
  };
  // Each built-in workload under each policy it runs under, with its shared
  // run, until the current share of the budget ends.
  using CellFn = std::function<Status(const std::string&, const PolicyVariant&, ExploreConfig)>;
  auto for_each_builtin = [&](const CellFn& cell) -> Status {
    for (size_t w = 0; w < builtins.size(); ++w) {
      const auto& [name, workload] = builtins[w];
      for (size_t vi = 0; vi < variants.size(); ++vi) {
        const PolicyVariant& v = variants[vi];
        if (!Runs(name, workload, v.policy, !config.policies.empty())) continue;
        if (builtins_over_budget()) {
          suite.budget_exhausted = true;
          break;
        }
        QCRASH_ASSIGN_OR_RETURN(ExploreConfig explore, prepare(w, vi));
        QCRASH_RETURN_IF_ERROR(cell(name, v, std::move(explore)));
      }
    }
    return Status::Ok();
  };
  // The last pass crashes the recovery too (I8): a crash inside the journal
  // replay, the refcount rebuild of a dirty image or a repair must recover.
  // The repair pass runs after the two cheapest passes, so a short budget
  // reaches it.
  // The eio pass (I13) fails each device request of the run in turn.
  for (const char* e : {"epochs", "prefix", "eio", "qemu-order", "repair", "corrupt",
                        "bounded-ends:2", "drop-one", "tear-one", "bounded:2", "nested"}) {
    if (std::string(e) == "repair") {
      QCRASH_RETURN_IF_ERROR(run_repair_pass());
      continue;
    }
    if (std::string(e) == "corrupt") {
      QCRASH_RETURN_IF_ERROR(run_corrupt_pass());
      continue;
    }
    if (std::string(e) == "qemu-order") {
      QCRASH_RETURN_IF_ERROR(run_qemu_order_pass());
      continue;
    }
    QCRASH_RETURN_IF_ERROR(for_each_builtin(
        [&](const std::string& name, const PolicyVariant& v, ExploreConfig explore) -> Status {
          if (std::string(e) == "eio") {
            explore.states_max = std::max<uint64_t>(1, config.builtin_states / 20);
            return run_cell(name, v, explore, "eio");
          }
          if (std::string(e) == "nested") {
            explore.recovery.nested_enumerator = "epochs";
            explore.recovery.nested_states_max = 32;
            explore.states_max = std::max<uint64_t>(1, config.builtin_states / 20);
            const Status ran = run_cell(name, v, explore, "drop-one");
            if (ran.ok()) suite.cells.back().enumerator += "+nested:epochs";
            return ran;
          }
          return run_cell(name, v, explore, e);
        }));
  }
  // The data pass, with its own deadline: it starts where the passes above
  // stopped (their budget spent, or every cell done).
  if (config.budget_seconds > 0) {
    builtin_cells_left = pairs;
    builtin_deadline =
        start + std::chrono::duration_cast<Clock::duration>(
                    std::chrono::duration<double>(kDataShare * config.budget_seconds));
  }
  QCRASH_RETURN_IF_ERROR(for_each_builtin(
      [&](const std::string& name, const PolicyVariant& v, ExploreConfig explore) -> Status {
        explore.states_max = config.data_states;
        return run_cell(name, v, explore, kDataEnumerator);
      }));
  prepared.clear();
  builtin_cells_left = 0;  // generated cells: capped by states, not time

  for (uint64_t seed = config.seed; !over_budget(); ++seed) {
    if (config.budget_seconds <= 0 && config.generated_max == 0)
      break;  // no budget and no count: none
    if (config.generated_max != 0 && suite.generated_workloads >= config.generated_max) break;
    ++suite.generated_workloads;
    for (const PolicyVariant& v : variants) {
      if (over_budget()) break;
      GeneratedCase c = GenerateCase(seed, 0, v.policy);
      ExploreConfig explore;
      explore.workload = c.workload;
      explore.run = c.run;
      explore.run.open.faults = config.bugs;
      if (v.policy == engine::OrderingPolicy::kJournal) {
        explore.run.open.journal.recovery = v.scan_recovery
                                                ? engine::JournalRecovery::kScanOnly
                                                : engine::JournalRecovery::kHeaderBookkeeping;
      }
      explore.states_max = config.generated_states;
      QCRASH_ASSIGN_OR_RETURN(WorkloadRun run, RunWorkload(explore.workload, explore.run));
      explore.prepared = std::make_shared<const WorkloadRun>(std::move(run));
      for (const char* e : {"epochs", "prefix", "drop-one", "tear-one", "bounded-ends:2"}) {
        QCRASH_RETURN_IF_ERROR(run_cell(c.workload.name, v, explore, e));
      }
      // Capped by time too: where the mapping is not plain (a compressed
      // cluster, a snapshot) each data state's content is checked in full.
      ExploreConfig data = explore;
      data.states_max = config.generated_data_states;
      if (config.budget_seconds > 0) {
        data.budget_seconds = 0.0025 * config.budget_seconds;
        data.states_min = kBuiltinStatesMin;
      }
      QCRASH_RETURN_IF_ERROR(run_cell(c.workload.name, v, data, kDataEnumerator));
      ExploreConfig eio = explore;
      eio.states_max = std::max<uint64_t>(1, config.generated_states / 20);
      QCRASH_RETURN_IF_ERROR(run_cell(c.workload.name, v, eio, "eio"));
      check_close(c.workload.name, v, explore);
    }
  }
  suite.elapsed_seconds = Since(start);
  return suite;
}

}  // namespace qcrash::properties
