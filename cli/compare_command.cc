// `qcrash compare [-f FMT] [-F FMT] [-s] [-q] [-U] FILE1 FILE2`: qemu-img
// compare. Compares the guest views of two images (qcow2 or raw) sector by
// sector and names the first sector that differs. Exit codes as qemu-img:
// 0 identical, 1 different, 2 an image does not open, 3 its block status
// cannot be read, 4 a read fails.
#include <getopt.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "cli/guest_view.h"

namespace qcrash::cli {
namespace {

constexpr const char* kUsage =
    "usage: qcrash compare [-f FMT] [-F FMT] [-T CACHE] [-p] [-q] [-s] [-U] FILE1 FILE2\n";
constexpr uint64_t kSectorBytes = 512;
constexpr uint64_t kChunkBytes = uint64_t{2} << 20;

enum Exit : int {
  kIdentical = 0,
  kDifferent = 1,
  kOpenError = 2,
  kStatusError = 3,
  kReadError = 4
};

// The block status qemu-img's strict mode compares.
bool SameStatus(const engine::MapExtent& a, const engine::MapExtent& b) {
  return a.present == b.present && a.zero == b.zero && a.data == b.data &&
         a.has_offset == b.has_offset;
}

// Walks a view's extents in guest order.
class ExtentCursor {
 public:
  explicit ExtentCursor(std::vector<engine::MapExtent> extents) : extents_(std::move(extents)) {}
  // The extent holding `offset` (extents cover the whole disk).
  const engine::MapExtent& At(uint64_t offset) {
    while (next_ + 1 < extents_.size() &&
           extents_[next_].start + extents_[next_].length <= offset) {
      ++next_;
    }
    return extents_[next_];
  }
  bool empty() const { return extents_.empty(); }

 private:
  std::vector<engine::MapExtent> extents_;
  size_t next_ = 0;
};

// The first 512-byte sector of `a` that differs from `b` (byte offset
// within them), or nullopt.
std::optional<uint64_t> FirstDifferentSector(std::span<const uint8_t> a,
                                             std::span<const uint8_t> b) {
  for (uint64_t at = 0; at < a.size(); at += kSectorBytes) {
    const uint64_t n = std::min<uint64_t>(kSectorBytes, a.size() - at);
    if (!std::equal(a.begin() + at, a.begin() + at + n, b.begin() + at)) return at;
  }
  return std::nullopt;
}

struct Comparison {
  GuestView* views[2];
  std::string names[2];
  bool quiet = false;
  std::vector<uint8_t> buffers[2] = {std::vector<uint8_t>(kChunkBytes),
                                     std::vector<uint8_t>(kChunkBytes)};

  void Say(const std::string& line) const {
    if (!quiet) std::printf("%s\n", line.c_str());
  }
  int Mismatch(uint64_t offset) const {
    Say("Content mismatch at offset " + std::to_string(offset) + "!");
    return kDifferent;
  }
  int ReadFailed(int which, const Status& status) const {
    std::fprintf(stderr, "qcrash: Error while reading offset of %s: %s\n", names[which].c_str(),
                 status.ToString().c_str());
    return kReadError;
  }
  // [offset, offset + length) of view `which` must read zeroes.
  int CheckZero(int which, uint64_t offset, uint64_t length) {
    const std::span<uint8_t> chunk(buffers[which].data(), length);
    if (Status read = views[which]->Read(offset, chunk); !read.ok()) return ReadFailed(which, read);
    for (uint64_t at = 0; at < length; at += kSectorBytes) {
      const uint64_t n = std::min<uint64_t>(kSectorBytes, length - at);
      if (std::any_of(chunk.begin() + at, chunk.begin() + at + n, [](uint8_t b) { return b; }))
        return Mismatch(offset + at);
    }
    return kIdentical;
  }
};

}  // namespace

int RunCompare(int argc, char** argv) {
  static const option kLong[] = {{"help", no_argument, nullptr, 'h'},
                                 {"force-share", no_argument, nullptr, 'U'},
                                 {nullptr, 0, nullptr, 0}};
  ResetGetopt();
  std::string formats[2];
  bool strict = false, quiet = false, force_share = false;
  for (int c; (c = getopt_long(argc, argv, "hf:F:T:pqsU", kLong, nullptr)) != -1;) {
    switch (c) {
      case 'f':
        formats[0] = optarg;
        break;
      case 'F':
        formats[1] = optarg;
        break;
      case 'T':  // the source cache mode: qcrash reads through no host cache of its own
      case 'p':  // progress: a compare of the images this lab makes takes a moment
        break;
      case 'q':
        quiet = true;
        break;
      case 's':
        strict = true;
        break;
      case 'U':
        force_share = true;
        break;
      case 'h':
      default:
        return HelpOrBadOption(c, kUsage, kOpenError);
    }
  }
  if (argc - optind != 2) {
    std::fprintf(stderr, "qcrash: Expecting two image file names\n%s", kUsage);
    return kOpenError;
  }
  // As qemu-img: -F does not follow -f; an image without one is probed.
  Comparison cmp;
  cmp.quiet = quiet;
  GuestView views[2];
  std::optional<ExtentCursor> cursors[2];
  for (int i = 0; i < 2; ++i) {
    cmp.names[i] = argv[optind + i];
    auto view = OpenGuestView(cmp.names[i], formats[i], force_share);
    if (!view.ok()) {
      ReportError(cmp.names[i], view.status());
      return kOpenError;
    }
    views[i] = std::move(*view);
    cmp.views[i] = &views[i];
    auto extents = views[i].Extents();
    if (!extents.ok()) {
      ReportError(cmp.names[i], extents.status());
      return kStatusError;
    }
    cursors[i].emplace(std::move(*extents));
  }
  const uint64_t sizes[2] = {views[0].size_bytes, views[1].size_bytes};
  if (sizes[0] != sizes[1] && strict) {
    cmp.Say("Strict mode: Image size mismatch!");
    return kDifferent;
  }
  const uint64_t common = std::min(sizes[0], sizes[1]);
  for (uint64_t offset = 0; offset < common;) {
    const engine::MapExtent& a = cursors[0]->At(offset);
    const engine::MapExtent& b = cursors[1]->At(offset);
    const uint64_t end =
        std::min({a.start + a.length, b.start + b.length, common, offset + kChunkBytes});
    if (strict && !SameStatus(a, b)) {
      cmp.Say("Strict mode: Offset " + std::to_string(offset) + " block status mismatch!");
      return kDifferent;
    }
    const uint64_t length = end - offset;
    if (a.zero && b.zero) {
      // Both read zeroes.
    } else if (a.present == b.present) {
      if (a.present) {
        for (int i = 0; i < 2; ++i) {
          if (Status read = views[i].Read(offset, std::span(cmp.buffers[i].data(), length));
              !read.ok())
            return cmp.ReadFailed(i, read);
        }
        const auto at = FirstDifferentSector(std::span(cmp.buffers[0].data(), length),
                                             std::span(cmp.buffers[1].data(), length));
        if (at) return cmp.Mismatch(offset + *at);
      }
    } else if (int r = cmp.CheckZero(a.present ? 0 : 1, offset, length); r != kIdentical) {
      return r;
    }
    offset = end;
  }
  // Past the smaller disk, the larger one must read zeroes (qemu-img warns
  // only once the common part is equal).
  if (sizes[0] != sizes[1]) cmp.Say("Warning: Image size mismatch!");
  const int larger = sizes[0] > sizes[1] ? 0 : 1;
  for (uint64_t offset = common; offset < sizes[larger];) {
    const engine::MapExtent& e = cursors[larger]->At(offset);
    const uint64_t end = std::min({e.start + e.length, sizes[larger], offset + kChunkBytes});
    if (e.present && !e.zero) {
      if (int r = cmp.CheckZero(larger, offset, end - offset); r != kIdentical) return r;
    }
    offset = end;
  }
  cmp.Say("Images are identical.");
  return kIdentical;
}

}  // namespace qcrash::cli
