// Host-file hole detection for `qcrash map`, matching what qemu-img map
// reports for data over holes (see host_holes.h).
#include "cli/host_holes.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "engine/qcow2_format.h"

namespace qcrash::cli {
namespace {

namespace format = engine::format;
using engine::MapExtent;

uint64_t LoadBigEndian64(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = (value << 8) | bytes[i];
  return value;
}

// Splits [offset, offset + length) of a host file into data and hole runs
// (lseek SEEK_DATA / SEEK_HOLE); appends (length, is_hole) pairs.
void HostRuns(int fd, uint64_t offset, uint64_t length,
              std::vector<std::pair<uint64_t, bool>>& runs) {
  const uint64_t end = offset + length;
  uint64_t at = offset;
  while (at < end) {
    const off_t data = ::lseek(fd, static_cast<off_t>(at), SEEK_DATA);
    const uint64_t data_start =
        data < 0 ? end : std::min<uint64_t>(end, static_cast<uint64_t>(data));
    if (data_start > at) {
      runs.emplace_back(data_start - at, true);
      at = data_start;
      continue;
    }
    const off_t hole = ::lseek(fd, static_cast<off_t>(at), SEEK_HOLE);
    const uint64_t hole_start =
        hole < 0 ? end : std::min<uint64_t>(end, static_cast<uint64_t>(hole));
    if (hole_start <= at) {  // the file changed under us: call the rest data
      runs.emplace_back(end - at, false);
      break;
    }
    runs.emplace_back(hole_start - at, false);
    at = hole_start;
  }
}

}  // namespace

bool DetectsMetadataPreallocation(const std::string& qcow2_path) {
  auto header = ReadHeaderOf(qcow2_path);
  struct stat st {};
  if (!header.ok() || ::stat(qcow2_path.c_str(), &st) != 0) return false;
  auto device = FileDevice::Open(qcow2_path, FileDevice::Mode::kReadOnly);
  if (!device.ok()) return false;
  const uint64_t cluster_bytes = header->cluster_bytes();
  const uint64_t real_clusters = static_cast<uint64_t>(st.st_blocks) * 512 / cluster_bytes;
  const uint64_t threshold = std::max(real_clusters * 10 / 9, real_clusters + 2);
  const uint64_t end_cluster = ((*device)->SizeBytes() + cluster_bytes - 1) / cluster_bytes;
  const uint64_t block_entries =
      format::RefcountBlockEntries(header->cluster_bits, header->refcount_order);
  std::vector<uint8_t> table(uint64_t{header->refcount_table_clusters} * cluster_bytes);
  if (!(*device)->Read(header->refcount_table_offset, table).ok()) return false;
  std::vector<uint8_t> block(cluster_bytes);
  uint64_t counted = 0;
  for (uint64_t first = 0; first < end_cluster && counted < threshold; first += block_entries) {
    const uint64_t index = first / block_entries;
    if ((index + 1) * 8 > table.size()) break;
    const uint64_t block_offset =
        LoadBigEndian64(&table[index * 8]) & format::kRefcountTableOffsetMask;
    if (block_offset == 0) continue;
    if (!(*device)->Read(block_offset, block).ok()) return false;
    for (uint64_t i = 0; i < block_entries && first + i < end_cluster; ++i) {
      counted += format::GetRefcount(block, i, header->refcount_order) != 0 ? 1 : 0;
    }
  }
  return counted >= threshold;
}

std::vector<MapExtent> SplitHostHoles(const std::vector<ChainFile>& chain,
                                      const std::vector<MapExtent>& extents) {
  std::vector<int> fds(chain.size(), -1);
  std::vector<int> asks(chain.size(), -1);  // -1 unknown, 0 no, 1 yes
  std::vector<MapExtent> split;
  std::vector<std::pair<uint64_t, bool>> runs;
  for (const MapExtent& extent : extents) {
    if (!extent.data || extent.zero || !extent.has_offset || extent.depth >= chain.size()) {
      split.push_back(extent);
      continue;
    }
    int& ask = asks[extent.depth];
    if (ask < 0)
      ask = chain[extent.depth].raw || DetectsMetadataPreallocation(chain[extent.depth].name);
    if (ask == 0) {
      split.push_back(extent);
      continue;
    }
    int& fd = fds[extent.depth];
    if (fd < 0) fd = ::open(chain[extent.depth].name.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      split.push_back(extent);
      continue;
    }
    runs.clear();
    HostRuns(fd, extent.offset, extent.length, runs);
    uint64_t done = 0;
    for (const auto& [length, hole] : runs) {
      MapExtent piece = extent;
      piece.start = extent.start + done;
      piece.offset = extent.offset + done;
      piece.length = length;
      if (hole) {
        piece.zero = true;
        piece.data = !chain[extent.depth].raw;
      }
      split.push_back(piece);
      done += length;
    }
  }
  for (int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
  return split;
}

}  // namespace qcrash::cli
