// The JSON summary of a write log (report code: counts, epochs and the first
// records), the human-readable companion of the compact binary form.
#pragma once

#include <cstddef>
#include <string>

#include "engine/status.h"
#include "sim/write_log.h"

namespace qcrash::sim {

// {"format":"qcrash-write-log","version":1,"sector_bytes":..,"initial_size_bytes":..,
//  "record_count":..,"writes":..,"fua_writes":..,"flushes":..,"resizes":..,
//  "data_bytes":..,"epochs":..,"max_pending_writes":..,
//  "records":[{"index":0,"kind":"write","offset":..,"length":..},...],
//  "records_truncated":bool}
std::string LogSummaryJson(const WriteLog& log, size_t max_records_listed = 1000);
Status SaveLogSummary(const WriteLog& log, const std::string& path,
                      size_t max_records_listed = 1000);

}  // namespace qcrash::sim
