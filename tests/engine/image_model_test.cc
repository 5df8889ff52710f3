// The engine's functional oracle: for a random image option set (version,
// cluster size, refcount width, lazy refcounts, preallocation, ordering
// policy, tiny caches) and a random sequence of writes, zero writes (with and
// without unmap), cluster-aligned discards, flushes, growing truncates and
// close/reopen cycles on a MemoryDevice, the guest view always reads back
// exactly like a flat byte-vector model, before and after a clean reopen.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "engine/image.h"
#include "engine/memory_device.h"

namespace qcrash::engine {
namespace {

struct Options {
  CreateOptions create;
  OpenOptions open;
};

Options GenerateOptions() {
  Options o;
  o.open.policy = *rc::gen::element(OrderingPolicy::kWritethrough, OrderingPolicy::kOrdered,
                                    OrderingPolicy::kLazy, OrderingPolicy::kExtent,
                                    OrderingPolicy::kUnsafe, OrderingPolicy::kJournal);
  // Lazy refcounts and the journal (a header extension plus feature bits) need v3.
  const bool needs_v3 =
      o.open.policy == OrderingPolicy::kLazy || o.open.policy == OrderingPolicy::kJournal;
  o.create.version = needs_v3 ? 3 : *rc::gen::element<uint32_t>(2, 3);
  o.create.cluster_bits =
      *rc::gen::weightedElement<uint32_t>({{3, 9}, {2, 10}, {3, 12}, {1, 14}, {3, 16}, {1, 21}});
  if (o.open.policy == OrderingPolicy::kJournal && o.create.cluster_bits == 9) {
    // The journal's header extension does not fit a 512-byte cluster 0
    // (.notes/engine-bugs.md #2); the interop matrix keeps that case visible.
    o.create.cluster_bits = 10;
  }
  o.create.refcount_order = o.create.version == 2 ? 4 : *rc::gen::inRange<uint32_t>(0, 7);
  o.create.lazy_refcounts = o.create.version == 3 && *rc::gen::arbitrary<bool>();
  o.create.extended_l2 =
      o.create.version == 3 && o.create.cluster_bits >= 14 && *rc::gen::arbitrary<bool>();
  o.create.preallocation = *rc::gen::element(Preallocation::kOff, Preallocation::kMetadata);
  o.create.size_bytes = *rc::gen::inRange<uint64_t>(1, 4096) * 512;  // up to 2 MiB
  o.open.l2_cache_tables = *rc::gen::inRange<uint32_t>(1, 5);
  o.open.refcount_cache_blocks = *rc::gen::inRange<uint32_t>(1, 4);
  o.open.extent_clusters = *rc::gen::inRange<uint32_t>(1, 40);
  return o;
}

std::string Describe(const Options& o) {
  return "v" + std::to_string(o.create.version) +
         " cluster_bits=" + std::to_string(o.create.cluster_bits) +
         " refcount_order=" + std::to_string(o.create.refcount_order) +
         " lazy=" + std::to_string(o.create.lazy_refcounts) +
         " extended_l2=" + std::to_string(o.create.extended_l2) +
         " prealloc=" + PreallocationName(o.create.preallocation) +
         " size=" + std::to_string(o.create.size_bytes) + " policy=" + PolicyName(o.open.policy) +
         " l2_cache=" + std::to_string(o.open.l2_cache_tables) +
         " refcount_cache=" + std::to_string(o.open.refcount_cache_blocks);
}

// Reads the whole guest view and compares it with the model.
void ExpectGuestEquals(Image& image, const std::vector<uint8_t>& model, const std::string& when) {
  RC_ASSERT(image.size_bytes() == model.size());
  std::vector<uint8_t> guest(model.size());
  const Status status = image.Read(0, guest);
  RC_ASSERT(status.ok());
  const auto [mismatch, ignored] = std::mismatch(guest.begin(), guest.end(), model.begin());
  if (mismatch != guest.end()) {
    RC_FAIL(when + ": guest offset " + std::to_string(mismatch - guest.begin()) + " reads " +
            std::to_string(*mismatch) + ", model says " +
            std::to_string(model[static_cast<size_t>(mismatch - guest.begin())]));
  }
}

// A random guest range inside [0, size): mostly small, sometimes cluster-sized.
std::pair<uint64_t, uint64_t> GenerateRange(uint64_t size_bytes, uint64_t cluster_bytes) {
  const uint64_t offset = *rc::gen::inRange<uint64_t>(0, size_bytes);
  const uint64_t max_length = std::min<uint64_t>(size_bytes - offset, 3 * cluster_bytes + 4096);
  const uint64_t length = *rc::gen::inRange<uint64_t>(1, max_length + 1);
  return {offset, length};
}

RC_GTEST_PROP(ImageModel, RandomOpsReadBackLikeAFlatModel, ()) {
  const Options o = GenerateOptions();
  RC_TAG(PolicyName(o.open.policy));
  RC_LOG() << Describe(o) << "\n";
  MemoryDevice device;
  auto created = Image::Create(device, o.create, o.open);
  RC_ASSERT(created.ok());
  std::unique_ptr<Image> image = std::move(created).value();
  std::vector<uint8_t> model(o.create.size_bytes, 0);
  const uint64_t cluster = uint64_t{1} << o.create.cluster_bits;
  const int steps = *rc::gen::inRange(1, 40);
  for (int step = 0; step < steps; ++step) {
    const int kind = *rc::gen::inRange(0, 100);
    const uint64_t size = model.size();
    if (kind < 45) {
      const auto [offset, length] = GenerateRange(size, cluster);
      const auto seed = *rc::gen::arbitrary<uint8_t>();
      std::vector<uint8_t> data(length);
      for (size_t i = 0; i < length; ++i) data[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
      RC_LOG() << "write " << offset << " " << length << "\n";
      RC_ASSERT(image->Write(offset, data).ok());
      std::copy(data.begin(), data.end(), model.begin() + static_cast<std::ptrdiff_t>(offset));
    } else if (kind < 65) {
      const auto [offset, length] = GenerateRange(size, cluster);
      const bool unmap = *rc::gen::arbitrary<bool>();
      RC_LOG() << "write-zeroes " << offset << " " << length << (unmap ? " unmap" : "") << "\n";
      RC_ASSERT(image->WriteZeroes(offset, length, unmap).ok());
      std::fill_n(model.begin() + static_cast<std::ptrdiff_t>(offset), length, 0);
    } else if (kind < 75) {
      // Whole clusters only: like QEMU, a partial-cluster discard may do
      // nothing. With extended L2, whole subclusters.
      const uint64_t unit = o.create.extended_l2 ? cluster / 32 : cluster;
      const uint64_t units = (size + unit - 1) / unit;
      const uint64_t first = *rc::gen::inRange<uint64_t>(0, units);
      const uint64_t count =
          *rc::gen::inRange<uint64_t>(1, std::min<uint64_t>(units - first, 70) + 1);
      const uint64_t offset = first * unit;
      const uint64_t length = std::min(size - offset, count * unit);
      RC_LOG() << "discard " << offset << " " << length << "\n";
      RC_ASSERT(image->Discard(offset, length).ok());
      std::fill_n(model.begin() + static_cast<std::ptrdiff_t>(offset), length, 0);
    } else if (kind < 83) {
      RC_LOG() << "flush\n";
      RC_ASSERT(image->Flush().ok());
    } else if (kind < 90) {
      const uint64_t new_size = size + *rc::gen::inRange<uint64_t>(1, 2048) * 512;
      RC_LOG() << "truncate " << new_size << "\n";
      RC_ASSERT(image->Truncate(new_size, Preallocation::kOff).ok());
      model.resize(new_size, 0);
    } else {
      RC_LOG() << "close + reopen\n";
      RC_ASSERT(image->Close().ok());
      image.reset();
      auto reopened = Image::Open(device, o.open);
      RC_ASSERT(reopened.ok());
      image = std::move(reopened).value();
    }
    if (*rc::gen::inRange(0, 4) == 0)
      ExpectGuestEquals(*image, model, "after step " + std::to_string(step));
  }
  ExpectGuestEquals(*image, model, "at the end");
  RC_ASSERT(image->Close().ok());
  image.reset();
  OpenOptions read_only = o.open;
  read_only.read_only = true;
  auto reopened = Image::Open(device, read_only);
  RC_ASSERT(reopened.ok());
  ExpectGuestEquals(**reopened, model, "after a clean reopen");
}

}  // namespace
}  // namespace qcrash::engine
