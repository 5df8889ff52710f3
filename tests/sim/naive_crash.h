// A naive reference for the crash model (sim/crash_model.h, M1-M9): replays
// the log into flat byte vectors and builds a crash state by full copy. It
// shares no code with CrashTimeline or CrashView, so the two can be compared.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <vector>

#include "sim/crash_model.h"
#include "sim/write_log.h"

namespace qcrash::sim::testing {

struct NaiveSector {
  std::optional<std::vector<uint8_t>> fua_durable;  // M5
  std::vector<std::vector<uint8_t>> versions;       // pending versions 1..v
};

struct NaivePoint {
  std::vector<uint8_t> durable;  // the epoch's durable image
  std::vector<uint8_t> latest;   // the in-order replay up to the point
  std::map<uint64_t, NaiveSector> sectors;
};

inline NaivePoint NaiveReplay(const std::vector<uint8_t>& initial, const WriteLog& log,
                              uint64_t point) {
  const uint32_t sector_bytes = log.sector_bytes();
  NaivePoint state{initial, initial, {}};
  for (uint64_t i = 0; i < point; ++i) {
    const LogRecord& record = log.record(i);
    if (record.kind == RecordKind::kFlush || record.kind == RecordKind::kResize) {
      if (record.kind == RecordKind::kResize) state.latest.resize(record.offset_bytes, 0);
      state.durable = state.latest;
      state.sectors.clear();
      continue;
    }
    const auto data = log.DataOf(record);
    if (data.empty()) continue;
    const uint64_t end = record.offset_bytes + data.size();
    if (end > state.latest.size()) state.latest.resize(end, 0);
    std::copy(data.begin(), data.end(), state.latest.begin() + record.offset_bytes);
    for (uint64_t s = record.offset_bytes / sector_bytes; s * sector_bytes < end; ++s) {
      std::vector<uint8_t> bytes(sector_bytes, 0);
      const uint64_t stop = std::min<uint64_t>(state.latest.size(), (s + 1) * sector_bytes);
      std::copy(state.latest.begin() + s * sector_bytes, state.latest.begin() + stop,
                bytes.begin());
      NaiveSector& sector = state.sectors[s];
      if (record.kind == RecordKind::kWriteFua) {
        sector.fua_durable = bytes;
        sector.versions.clear();
      } else {
        sector.versions.push_back(bytes);
      }
    }
  }
  return state;
}

// The bytes of one crash state, or nullopt when the state is not valid there.
inline std::optional<std::vector<uint8_t>> NaiveCrashImage(const std::vector<uint8_t>& initial,
                                                           const WriteLog& log,
                                                           const CrashState& state) {
  if (state.point > log.size()) return std::nullopt;
  const uint32_t sector_bytes = log.sector_bytes();
  const NaivePoint replay = NaiveReplay(initial, log, state.point);
  std::vector<uint8_t> image = replay.durable;  // the full copy
  image.resize(replay.latest.size(), 0);
  auto put = [&](uint64_t sector, const std::vector<uint8_t>& bytes) {
    for (uint64_t i = 0; i < sector_bytes && sector * sector_bytes + i < image.size(); ++i) {
      image[sector * sector_bytes + i] = bytes[i];
    }
  };
  auto durable_of = [&](uint64_t sector, const NaiveSector& entry) {
    if (entry.fua_durable) return *entry.fua_durable;
    std::vector<uint8_t> bytes(sector_bytes, 0);
    for (uint64_t i = 0; i < sector_bytes && sector * sector_bytes + i < replay.durable.size();
         ++i) {
      bytes[i] = replay.durable[sector * sector_bytes + i];
    }
    return bytes;
  };
  for (const auto& [sector, entry] : replay.sectors) {
    if (entry.fua_durable) put(sector, *entry.fua_durable);
    if (!entry.versions.empty()) put(sector, entry.versions.back());
  }
  for (const SectorChoice& choice : state.deviations) {
    auto it = replay.sectors.find(choice.sector);
    if (it == replay.sectors.end() || it->second.versions.empty()) return std::nullopt;
    const NaiveSector& entry = it->second;
    auto version = [&](uint32_t k) {
      return k == 0 ? durable_of(choice.sector, entry) : entry.versions[k - 1];
    };
    const uint32_t count = static_cast<uint32_t>(entry.versions.size());
    if (choice.kind == ChoiceKind::kVersion) {
      if (choice.version > count) return std::nullopt;
      put(choice.sector, version(choice.version));
    } else if (choice.kind == ChoiceKind::kMix) {
      if (choice.version > count || choice.second_version > count) return std::nullopt;
      std::vector<uint8_t> bytes = version(choice.second_version);
      const std::vector<uint8_t> head = version(choice.version);
      std::copy(head.begin(), head.begin() + choice.cut_bytes, bytes.begin());
      put(choice.sector, bytes);
    } else {
      std::vector<uint8_t> bytes(sector_bytes);
      FillGarbage(state.point, choice.sector, bytes.data(), sector_bytes);
      put(choice.sector, bytes);
    }
  }
  return image;
}

}  // namespace qcrash::sim::testing
