// The crash model of the simulated disk, as a spec, and the timeline that
// turns a write log into crash points and crash states.
//
// CRASH MODEL (the spec; DESIGN.md "Crash model" is its summary)
//
//  M1 Log. A device's history is its write log: records 0..n-1, each a write
//     (offset, bytes), a FUA write, a flush or a resize, in submission order.
//  M2 Crash point. Point p in [0, n] means "records [0, p) were submitted, the
//     power failed before record p". Point 0 is the initial image; point n is
//     the end of the log.
//  M3 Sectors. The atomic unit is a sector of S bytes (S = 512 by default, or
//     4096), the log's sector_bytes. A write touches every sector its byte
//     range overlaps; its version of a sector is that sector's content right
//     after the write is applied in log order (so a partial-sector write
//     carries the earlier bytes of the sector, as a read-modify-write would).
//  M4 Barriers. A flush makes every earlier write durable. A resize is durable
//     at once and is ordered like a flush (a deliberate simplification: a lost
//     or reordered size change is not modelled). The records between two
//     barriers form a flush epoch; the durable image at the start of an epoch
//     is the in-order replay of everything before it.
//  M5 FUA. A FUA write is durable when it completes: at every later point of
//     its epoch, the FUA version is the durable version of each sector it
//     touches, and the earlier pending versions of those sectors are gone.
//  M6 Pending sectors. At point p, a sector is pending when a non-FUA write in
//     p's epoch, after the sector's last FUA write and before p, touched it.
//     Its versions are: 0 = its durable version, k = the version of the k-th
//     such write (1 <= k <= v, in log order). v is its version count.
//  M7 The crash rule. At a crash at point p each pending sector independently
//     holds any one of its versions 0..v. This covers dropped writes (0),
//     reordered writes (any mix across sectors) and writes torn at sector
//     boundaries (different versions for the sectors of one write).
//  M8 Non-atomic sectors (off by default, NonAtomicOptions). A pending sector
//     may also hold a mix of two distinct versions a and b cut at byte c (bytes
//     [0, c) of a, [c, S) of b), or garbage (bytes derived from the point and
//     sector by a fixed generator, so the state rebuilds exactly).
//  M9 Crash state. A point plus a choice per pending sector. "Latest" is
//     choice v for every sector; the latest state at p equals the in-order
//     replay of records [0, p) (the prefix state). The size at point p is the
//     in-order size (resizes are durable, growth by writes is kept).
//  M10 Ids. A state's id lists the point and only the sectors not at latest,
//     in increasing sector order:
//        "p<point>"                       the prefix state
//        "p<point>:<sector>=<version>,..." atomic choices, e.g. "p12:40=0,41=2"
//        "<sector>=<a>/<b>@<cut>"         a non-atomic mix, e.g. "7=0/2@256"
//        "<sector>=g"                     non-atomic garbage
//     The id rebuilds exactly that state from the same log (CrashTimeline::
//     BuildView), and FormatCrashStateId(ParseCrashStateId(id)) == id.
//
//  M11 Two devices. A log may also hold a second device (an external data
//     file beside a qcow2 image) in the byte range from kSecondDeviceBaseBytes
//     (2^50, write_log.h): its writes carry offsets from there, its flushes
//     and resizes name it the same way. A flush or resize is a barrier for
//     its own device only (M4 per device): it makes that device's earlier
//     writes durable, and the other device's pending writes stay pending. A
//     crash state chooses a version for the pending sectors of both devices;
//     the second device's sectors are numbered from 2^50 / S, so one state id
//     names both. A crash view shows the image; SecondDeviceView the second.
//  M12 The committed backing file. A workload that commits into its raw
//     backing file (qemu-img commit, engine/commit.cc) records that file as
//     the second device of M11, exactly as a data file (the two never meet:
//     a data file excludes a backing file), and recovery reads the crash
//     state's backing file. A workload without a commit records only the
//     image, as before.
//
//  Worked example, S = 512, log: W(0, 1024 bytes "A") F W(512, 512 "B")
//  W(512, 1024 "C") W(1536, 512 "D" FUA). Epochs: [0,1] then [2..]. At point 5
//  the durable image holds A A in sectors 0-1, sector 3 holds D (FUA), sector
//  1 has versions {0: A, 1: B, 2: C} and sector 2 {0: zero, 1: C}: 3 x 2 = 6
//  crash states; "p5" reads A C C D, "p5:1=1,2=0" reads A B 0 D.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/status.h"
#include "sim/chunked_image.h"
#include "sim/write_log.h"

namespace qcrash::sim {

class CrashView;

// M8: the optional non-atomic sector mode. Enumerators draw mixes from cuts_bytes;
// ids and views accept any cut in [1, S).
struct NonAtomicOptions {
  bool enabled = false;
  std::vector<uint32_t> cuts_bytes = {};  // empty: the half sector
  bool garbage = true;                    // also offer one garbage choice per sector
};

enum class ChoiceKind : uint8_t { kVersion, kMix, kGarbage };

// The version one pending sector holds in a crash state (M7, M8).
struct SectorChoice {
  uint64_t sector = 0;
  ChoiceKind kind = ChoiceKind::kVersion;
  uint32_t version = 0;         // kVersion: 0..v; kMix: the version of bytes [0, cut)
  uint32_t second_version = 0;  // kMix: the version of bytes [cut, S)
  uint32_t cut_bytes = 0;       // kMix only

  bool operator==(const SectorChoice&) const = default;
};

// A crash point plus the sectors that differ from latest, sorted by sector (M9).
struct CrashState {
  uint64_t point = 0;
  std::vector<SectorChoice> deviations;

  bool operator==(const CrashState&) const = default;
};

std::string FormatCrashStateId(const CrashState& state);
// Parses an id (M10); syntax only: BuildView checks it against a timeline.
Result<CrashState> ParseCrashStateId(std::string_view id);

// One pending sector at a point: versions version_data[first .. first + count]
// (index first is the durable version: nullptr when it is the base image's).
struct PendingSector {
  uint64_t sector = 0;
  uint32_t first = 0;          // index into CrashPoint::version_data
  uint32_t count = 0;          // v, the number of pending versions (>= 1)
  uint32_t overlay_index = 0;  // index into CrashPoint::latest_overlay
  // The durable version's bytes inside the device's base image (a shared,
  // immutable chunk), or nullptr (a FUA-durable version, a hole, a sector
  // across chunks): lets a view read version 0 without a base lookup.
  const uint8_t* base_data = nullptr;
};

struct OverlayEntry {
  uint64_t sector = 0;
  const uint8_t* data = nullptr;  // sector_bytes bytes, or nullptr: read the base
};

// Everything needed to build any crash state of one point in O(pending).
struct CrashPoint {
  uint64_t point = 0;
  uint64_t size_bytes = 0;
  uint32_t sector_bytes = 512;
  NonAtomicOptions non_atomic;
  std::shared_ptr<const ChunkedImage> base;           // durable image of the epoch
  std::shared_ptr<const std::vector<uint8_t>> arena;  // keeps version bytes alive
  std::vector<PendingSector> pending;                 // sorted by sector
  std::vector<const uint8_t*> version_data;
  std::vector<uint64_t> version_record;      // log record of each version (durable: ~0)
  std::vector<OverlayEntry> latest_overlay;  // sorted; pending and FUA-durable sectors
  // M11: the second device's durable image and size at this point (null:
  // the log has no second device). Its sectors in pending and
  // latest_overlay are numbered from kSecondDeviceBaseBytes / sector_bytes.
  std::shared_ptr<const ChunkedImage> second_base;
  uint64_t second_size_bytes = 0;

  // Choices per pending sector: v + 1 atomic, plus mixes and garbage (M8).
  uint64_t ChoiceCount(size_t pending_index) const;
  // The choice with that index (0..ChoiceCount-1); index v is latest.
  SectorChoice ChoiceAt(size_t pending_index, uint64_t choice_index) const;
  // Index into pending of sector, or -1.
  int64_t FindPending(uint64_t sector) const;
};

class CrashTimeline {
 public:
  // initial: the image the log starts on (its size should be the log's
  // initial_size_bytes; a null pointer means a zero-filled one).
  // second_initial: the second device's initial image (M11), when the log
  // holds one (null and no second-device record: a one-device log).
  CrashTimeline(std::shared_ptr<const ChunkedImage> initial, std::shared_ptr<const WriteLog> log,
                NonAtomicOptions non_atomic = {},
                std::shared_ptr<const ChunkedImage> second_initial = nullptr);

  uint64_t PointCount() const { return log_->size() + 1; }  // points 0..n
  uint32_t sector_bytes() const { return log_->sector_bytes(); }
  const WriteLog& log() const { return *log_; }
  size_t EpochCount() const { return epochs_[0].size(); }  // the image's (M4)
  bool has_second_device() const { return !epochs_[1].empty(); }
  const NonAtomicOptions& non_atomic() const { return non_atomic_; }

  // The crash point p (M2, M6); O(versions in p's epoch).
  std::shared_ptr<const CrashPoint> Point(uint64_t point) const;

  // The state's view; checks the state against the point (InvalidArgument).
  Result<std::unique_ptr<CrashView>> BuildView(const CrashState& state) const;
  static Result<std::unique_ptr<CrashView>> BuildView(std::shared_ptr<const CrashPoint> point,
                                                      const CrashState& state);
  // The second device's view of the same state (M11); InvalidArgument when
  // the point has no second device.
  static Result<std::unique_ptr<CrashView>> SecondDeviceView(
      const std::shared_ptr<const CrashPoint>& point, const CrashState& state);

  // The durable image at the start of the epoch of point p (shared, not copied).
  std::shared_ptr<const ChunkedImage> EpochBase(uint64_t point) const;

 private:
  struct Version {
    uint64_t sector;
    uint64_t record;
    uint64_t arena_offset;
    bool fua;
  };
  struct Epoch {
    uint64_t first_record;  // the first point of this epoch
    std::shared_ptr<const ChunkedImage> base;
    std::vector<Version> versions;  // sorted by (sector, record)
  };
  size_t EpochOf(uint64_t point, uint32_t device = 0) const;
  // Appends device's pending sectors and overlay at point to cp (M6, M11).
  void AddPending(uint64_t point, uint32_t device, CrashPoint& cp) const;

  std::shared_ptr<const WriteLog> log_;
  NonAtomicOptions non_atomic_;
  std::array<std::vector<Epoch>, 2> epochs_;  // per device (M11); [1] empty without one
  // Per device, its size after record i; [0] is the initial size.
  std::array<std::vector<uint64_t>, 2> size_after_;
  std::shared_ptr<std::vector<uint8_t>> arena_;
};

// Bytes of a garbage sector (M8): a fixed generator seeded by point and sector.
void FillGarbage(uint64_t point, uint64_t sector, uint8_t* out, uint32_t sector_bytes);

}  // namespace qcrash::sim
