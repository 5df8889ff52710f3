// LogSummaryJson: the write log as a JSON summary, with nlohmann/json.
#include "sim/log_summary.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

namespace qcrash::sim {

std::string LogSummaryJson(const WriteLog& log, size_t max_records_listed) {
  nlohmann::json summary;
  uint64_t counts[5] = {0, 0, 0, 0, 0};
  uint64_t epochs = 1;
  uint64_t pending = 0;
  uint64_t max_pending = 0;
  nlohmann::json records = nlohmann::json::array();
  for (size_t i = 0; i < log.size(); ++i) {
    const LogRecord& record = log.record(i);
    ++counts[static_cast<size_t>(record.kind)];
    if (record.kind == RecordKind::kFlush || record.kind == RecordKind::kResize) {
      ++epochs;
      pending = 0;
    } else if (record.kind == RecordKind::kWrite) {
      max_pending = std::max(max_pending, ++pending);
    }
    if (i < max_records_listed) {
      nlohmann::json entry = {{"index", i}, {"kind", RecordKindName(record.kind)}};
      if (record.kind == RecordKind::kResize) {
        entry["size"] = record.offset_bytes;
      } else if (record.kind != RecordKind::kFlush) {
        entry["offset"] = record.offset_bytes;
        entry["length"] = record.length_bytes;
      }
      records.push_back(std::move(entry));
    }
  }
  summary["format"] = "qcrash-write-log";
  summary["version"] = 1;
  summary["sector_bytes"] = log.sector_bytes();
  summary["initial_size_bytes"] = log.initial_size_bytes();
  summary["record_count"] = log.size();
  summary["writes"] = counts[static_cast<size_t>(RecordKind::kWrite)];
  summary["fua_writes"] = counts[static_cast<size_t>(RecordKind::kWriteFua)];
  summary["flushes"] = counts[static_cast<size_t>(RecordKind::kFlush)];
  summary["resizes"] = counts[static_cast<size_t>(RecordKind::kResize)];
  summary["data_bytes"] = log.data_bytes();
  summary["epochs"] = epochs;
  summary["max_pending_writes"] = max_pending;
  summary["records"] = std::move(records);
  summary["records_truncated"] = log.size() > max_records_listed;
  return summary.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

Status SaveLogSummary(const WriteLog& log, const std::string& path, size_t max_records_listed) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Status::IoError(path + ": cannot create the log summary");
  out << LogSummaryJson(log, max_records_listed) << '\n';
  out.flush();
  if (!out) return Status::IoError(path + ": short write of the log summary");
  return Status::Ok();
}

}  // namespace qcrash::sim
