// WriteReproducer / ReadReproducer.
#include "cli/reproducer.h"

#include <filesystem>
#include <fstream>

#include "cli/cli_common.h"
#include "engine/bug_catalogue.h"
#include "engine/file_device.h"
#include "properties/eio.h"
#include "properties/json.h"
#include "sim/crash_view.h"

namespace qcrash::cli {

using nlohmann::json;

namespace {

// The journal policy's variant and geometry (explore --journal): a state id
// names a point of the write log, which depends on them.
json JournalToJson(const engine::JournalOptions& o) {
  return {
      {"block_order", o.block_order},
      {"size_bytes", o.size_bytes},
      {"commit", o.commit == engine::JournalCommit::kHeader ? "header" : "descriptor"},
      {"recovery", o.recovery == engine::JournalRecovery::kHeaderBookkeeping ? "header" : "scan"},
      {"terminator", o.terminator == engine::JournalTerminator::kBlankBlock ? "blank" : "escape"},
      {"checksum", !o.checksums          ? "none"
                   : o.byte_sum_checksum ? "bytesum"
                                         : "crc32"}};
}

engine::JournalOptions JournalFromJson(const json& j) {
  engine::JournalOptions o;
  if (!j.is_object()) return o;
  o.block_order = j.value("block_order", o.block_order);
  o.size_bytes = j.value("size_bytes", o.size_bytes);
  o.commit = j.value("commit", "header") == "header" ? engine::JournalCommit::kHeader
                                                     : engine::JournalCommit::kDescriptorFlag;
  o.recovery = j.value("recovery", "header") == "header"
                   ? engine::JournalRecovery::kHeaderBookkeeping
                   : engine::JournalRecovery::kScanOnly;
  o.terminator = j.value("terminator", "blank") == "blank" ? engine::JournalTerminator::kBlankBlock
                                                           : engine::JournalTerminator::kEscapeFlag;
  const std::string checksum = j.value("checksum", "crc32");
  o.checksums = checksum != "none";
  o.byte_sum_checksum = checksum == "bytesum";
  return o;
}

Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status::IoError(path + ": cannot write");
  return Status::Ok();
}

// The raw crash image (before any recovery write), as a file qemu-img opens.
// For an eio state (properties/eio.h), the image the failed run left after
// its close (or, when the engine swallowed the error, at the end of its log).
Status WriteCrashImage(const std::string& path, const Reproducer& r) {
  properties::RunOptions options = r.run;
  sim::CrashState state;
  const bool eio = properties::IsIoErrorStateId(r.state_id);
  if (eio) {
    QCRASH_ASSIGN_OR_RETURN(properties::IoErrorCase c, properties::ParseIoErrorCase(r.state_id));
    options.io_errors.rules = {{.op = c.op, .nth_op = c.nth}};
  } else {
    QCRASH_ASSIGN_OR_RETURN(state, sim::ParseCrashStateId(r.state_id));
  }
  QCRASH_ASSIGN_OR_RETURN(properties::WorkloadRun run,
                          properties::RunWorkload(r.workload, options));
  if (eio) state.point = run.timeline->PointCount() - 1;
  if (state.point >= run.timeline->PointCount())
    return Status::InvalidArgument("state point out of range");
  std::vector<uint8_t> bytes;
  if (eio && run.after_close) {
    bytes.resize(run.after_close->SizeBytes());
    run.after_close->Read(0, bytes);
  } else {
    QCRASH_ASSIGN_OR_RETURN(auto view, run.timeline->BuildView(state));
    bytes.resize(view->SizeBytes());
    QCRASH_RETURN_IF_ERROR(view->Read(0, bytes));
  }
  QCRASH_ASSIGN_OR_RETURN(auto file, FileDevice::Open(path, FileDevice::Mode::kCreate));
  QCRASH_RETURN_IF_ERROR(file->Write(0, bytes));
  QCRASH_RETURN_IF_ERROR(file->Flush());
  if (!run.data_initial) return Status::Ok();
  // The external data file beside it, under the name the image's header
  // holds, as the crash state left it.
  std::vector<uint8_t> data;
  if (eio && run.after_close_data) {
    data.resize(run.after_close_data->SizeBytes());
    run.after_close_data->Read(0, data);
  } else {
    QCRASH_ASSIGN_OR_RETURN(auto point_view, sim::CrashTimeline::SecondDeviceView(
                                                 run.timeline->Point(state.point), state));
    data.resize(point_view->SizeBytes());
    QCRASH_RETURN_IF_ERROR(point_view->Read(0, data));
  }
  // M12: a committing workload's second device is its backing file.
  const std::string data_path =
      (std::filesystem::path(path).parent_path() / (properties::RecordsBacking(r.workload)
                                                        ? std::string(properties::kBackingFileName)
                                                        : r.workload.image.data_file))
          .string();
  QCRASH_ASSIGN_OR_RETURN(auto data_file, FileDevice::Open(data_path, FileDevice::Mode::kCreate));
  QCRASH_RETURN_IF_ERROR(data_file->Write(0, data));
  return data_file->Flush();
}

}  // namespace

Status WriteReproducer(const std::string& dir, const Reproducer& r) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return Status::IoError(dir + ": " + error.message());
  const json crash = {{"state_id", r.state_id},
                      {"invariant", r.invariant},
                      {"message", r.message},
                      {"policy", engine::PolicyName(r.run.open.policy)},
                      {"data_ordering",
                       r.run.open.data_ordering == engine::DataOrdering::kQemu ? "qemu" : "strict"},
                      {"sector_bytes", r.run.sector_bytes},
                      {"cache_l2", r.run.open.l2_cache_tables},
                      {"cache_refcount", r.run.open.refcount_cache_blocks},
                      {"bugs", r.bugs},
                      {"journal", JournalToJson(r.run.open.journal)},
                      {"nested_enumerator", r.recovery.nested_enumerator},
                      {"recovery_only", r.recovery.recovery_invariants_only},
                      {"junk_free_clusters", r.run.junk_free_clusters},
                      {"non_atomic", r.run.non_atomic.enabled}};
  json crash_with = crash;
  if (r.run.qemu) {
    // The engine under test was QEMU's: replays run qemu-io again.
    crash_with["engine"] = "qemu";
    crash_with["qemu"] = {{"qemu_io", r.run.qemu->qemu_io},
                          {"qemu_img", r.run.qemu->qemu_img},
                          {"cache", r.run.qemu->cache},
                          {"opts", r.run.qemu->runtime_opts},
                          {"create_opts", r.run.qemu->create_opts}};
  }
  if (r.run.corruption) {
    crash_with["corruption"] = properties::CorruptionName(*r.run.corruption);
    crash_with["corruption_choice"] = r.run.corruption_choice;
    crash_with["nested_states_max"] = r.recovery.nested_states_max;
  }
  QCRASH_RETURN_IF_ERROR(WriteText(dir + "/crash.json", DumpJson(crash_with, 2) + "\n"));
  QCRASH_RETURN_IF_ERROR(WriteText(dir + "/workload.json",
                                   DumpJson(properties::WorkloadToJson(r.workload), 2) + "\n"));
  std::string findings;
  for (const std::string& line : r.findings) findings += line + "\n";
  QCRASH_RETURN_IF_ERROR(WriteText(dir + "/findings.txt", findings));
  if (r.workload.backing) {
    // image.qcow2 names it: qemu-img opens the reproducer as it is.
    const std::vector<uint8_t> backing = properties::BackingFileBytes(r.workload);
    QCRASH_ASSIGN_OR_RETURN(auto file, FileDevice::Open(dir + "/" + properties::kBackingFileName,
                                                        FileDevice::Mode::kCreate));
    QCRASH_RETURN_IF_ERROR(file->Write(0, backing));
    QCRASH_RETURN_IF_ERROR(file->Flush());
  }
  if (properties::UsesSecondBacking(r.workload)) {
    // A rebase may have left the crash image naming the second one.
    QCRASH_ASSIGN_OR_RETURN(
        const std::vector<uint8_t> second,
        properties::BackingFileBytes(r.workload, properties::kBacking2FileName));
    QCRASH_ASSIGN_OR_RETURN(auto file, FileDevice::Open(dir + "/" + properties::kBacking2FileName,
                                                        FileDevice::Mode::kCreate));
    QCRASH_RETURN_IF_ERROR(file->Write(0, second));
    QCRASH_RETURN_IF_ERROR(file->Flush());
  }
  return WriteCrashImage(dir + "/image.qcow2", r);
}

Result<Reproducer> ReadReproducer(const std::string& dir) {
  Reproducer r;
  auto workload = properties::LoadWorkloadFile(dir + "/workload.json");
  if (!workload.ok()) return workload.status().WithContext(dir + "/workload.json");
  r.workload = std::move(workload).value();
  std::ifstream in(dir + "/crash.json");
  if (!in) return Status::IoError(dir + "/crash.json: cannot open");
  const json crash = json::parse(in, nullptr, false);
  if (crash.is_discarded() || !crash.is_object())
    return Status::InvalidArgument(dir + "/crash.json: not a JSON object");
  r.state_id = crash.value("state_id", "");
  r.invariant = crash.value("invariant", "");
  r.message = crash.value("message", "");
  QCRASH_ASSIGN_OR_RETURN(r.run.open.policy, engine::ParsePolicy(crash.value("policy", "ordered")));
  r.run.open.data_ordering = crash.value("data_ordering", "strict") == "qemu"
                                 ? engine::DataOrdering::kQemu
                                 : engine::DataOrdering::kStrict;
  r.run.sector_bytes = crash.value("sector_bytes", 512u);
  r.run.open.l2_cache_tables = crash.value("cache_l2", r.run.open.l2_cache_tables);
  r.run.open.refcount_cache_blocks =
      crash.value("cache_refcount", r.run.open.refcount_cache_blocks);
  r.recovery.nested_enumerator = crash.value("nested_enumerator", "");
  r.recovery.recovery_invariants_only = crash.value("recovery_only", false);
  // Reproducers written before the junk free space had none.
  r.run.junk_free_clusters = crash.value("junk_free_clusters", 0u);
  r.run.non_atomic.enabled = crash.value("non_atomic", false);
  if (crash.contains("corruption")) {
    const std::string name = crash.value("corruption", "");
    r.run.corruption = properties::ParseCorruption(name);
    if (!r.run.corruption)
      return Status::InvalidArgument(dir + "/crash.json: unknown corruption '" + name + "'");
    r.run.corruption_choice = crash.value("corruption_choice", uint64_t{0});
    r.recovery.nested_states_max = crash.value("nested_states_max", r.recovery.nested_states_max);
  }
  if (crash.value("engine", "qcrash") == "qemu") {
    const json q = crash.contains("qemu") && crash["qemu"].is_object() ? crash["qemu"] : json{};
    auto qemu = std::make_shared<properties::QemuEngineOptions>();
    qemu->qemu_io = q.value("qemu_io", qemu->qemu_io);
    qemu->qemu_img = q.value("qemu_img", qemu->qemu_img);
    qemu->cache = q.value("cache", qemu->cache);
    qemu->runtime_opts = q.value("opts", "");
    qemu->create_opts = q.value("create_opts", "");
    r.run.qemu = qemu;
  }
  if (crash.contains("journal")) r.run.open.journal = JournalFromJson(crash["journal"]);
  // "faults" is what reproducers written before --bug called the switches.
  const char* key = crash.contains("bugs") ? "bugs" : "faults";
  if (crash.contains(key) && crash[key].is_array()) {
    for (const json& name : crash[key]) {
      if (!name.is_string()) continue;
      r.bugs.push_back(name.get<std::string>());
      QCRASH_RETURN_IF_ERROR(engine::EnableBug(r.bugs.back(), r.run.open.faults));
    }
  }
  return r;
}

}  // namespace qcrash::cli
