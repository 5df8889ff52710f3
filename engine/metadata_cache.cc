// MetadataCache: LRU write-back tables with QEMU-style cache dependencies.
#include "engine/metadata_cache.h"

#include <algorithm>

namespace qcrash::engine {

Status CountingIo::ReadMetadata(uint64_t offset_bytes, std::span<uint8_t> out) {
  if (sink_ != nullptr) return sink_->Read(offset_bytes, out);
  // A table may end inside the last, partial cluster of the file: its bytes
  // past the end read as zeroes, as a short pread does in QEMU.
  const uint64_t size = device_.SizeBytes();
  if (offset_bytes < size && out.size() > size - offset_bytes) {
    const uint64_t available = size - offset_bytes;
    std::fill(out.begin() + static_cast<ptrdiff_t>(available), out.end(), 0);
    return device_.Read(offset_bytes, out.first(available));
  }
  return device_.Read(offset_bytes, out);
}

Status CountingIo::WriteMetadata(uint64_t offset_bytes, std::span<const uint8_t> data) {
  ++stats_.metadata_writes;
  if (sink_ != nullptr) return sink_->Write(offset_bytes, data);
  writes_pending_ = true;
  return device_.Write(offset_bytes, data);
}

Status CountingIo::WriteData(uint64_t offset_bytes, std::span<const uint8_t> data) {
  ++stats_.data_writes;
  data_pending_ = true;
  writes_pending_ = true;
  if (data_device_ != nullptr) data_file_pending_ = true;
  return data_device().Write(offset_bytes, data);
}

Status CountingIo::ReadData(uint64_t offset_bytes, std::span<uint8_t> out) {
  return data_device().Read(offset_bytes, out);
}

Status CountingIo::FlushDataFile(Rule why) {
  if (data_device_ == nullptr || !data_file_pending_) return Status::Ok();
  ++stats_.device_flushes;
  ++stats_.flushes_by_rule[static_cast<size_t>(why)];
  QCRASH_RETURN_IF_ERROR(data_device_->Flush());
  data_file_pending_ = false;
  data_pending_ = false;
  return Status::Ok();
}

Status CountingIo::DeviceFlush(Rule why) {
  // Why: whatever this flush makes durable in the image file may name guest
  // data in the data file (L2 entries, a journal commit), so that data is
  // made durable first.
  QCRASH_RETURN_IF_ERROR(FlushDataFile(why));
  ++stats_.device_flushes;
  ++stats_.flushes_by_rule[static_cast<size_t>(why)];
  QCRASH_RETURN_IF_ERROR(device_.Flush());
  data_pending_ = false;
  writes_pending_ = false;
  ++flush_generation_;
  return Status::Ok();
}

MetadataCache::MetadataCache(std::string name, CountingIo& io, uint32_t capacity_tables,
                             uint32_t table_bytes, bool writethrough)
    : name_(std::move(name)),
      io_(io),
      capacity_tables_(std::max<uint32_t>(capacity_tables, 2)),
      table_bytes_(table_bytes),
      writethrough_(writethrough) {}

Result<MetadataCache::Entry*> MetadataCache::Slot(uint64_t host_offset) {
  if (auto it = index_.find(host_offset); it != index_.end()) {
    Entry& hit = entries_[it->second];
    hit.last_use = ++clock_;
    return &hit;
  }
  size_t slot = entries_.size();
  if (entries_.size() >= capacity_tables_) {
    slot = 0;
    for (size_t i = 1; i < entries_.size(); ++i) {
      if (entries_[i].last_use < entries_[slot].last_use) slot = i;
    }
    Entry& victim = entries_[slot];
    if (victim.dirty) {
      // Eviction writes are a real source of ordering bugs: they obey the
      // same dependencies as a flush.
      ++io_.stats().eviction_writes;
      QCRASH_RETURN_IF_ERROR(SatisfyDependencies());
      QCRASH_RETURN_IF_ERROR(WriteEntry(victim));
    }
    index_.erase(victim.host_offset);
  } else {
    entries_.emplace_back();
    entries_.back().bytes.resize(table_bytes_);
  }
  Entry& entry = entries_[slot];
  entry.host_offset = host_offset;
  entry.dirty = false;
  entry.last_use = ++clock_;
  index_[host_offset] = slot;
  return &entry;
}

Result<uint8_t*> MetadataCache::Get(uint64_t host_offset) {
  const bool cached = index_.count(host_offset) != 0;
  QCRASH_ASSIGN_OR_RETURN(Entry * entry, Slot(host_offset));
  if (!cached) {
    Status read = io_.ReadMetadata(host_offset, entry->bytes);
    if (!read.ok()) {
      index_.erase(host_offset);
      entry->host_offset = ~uint64_t{0};
      entry->last_use = 0;
      return read;
    }
  }
  return entry->bytes.data();
}

Result<uint8_t*> MetadataCache::GetNew(uint64_t host_offset) {
  QCRASH_ASSIGN_OR_RETURN(Entry * entry, Slot(host_offset));
  std::fill(entry->bytes.begin(), entry->bytes.end(), 0);
  return entry->bytes.data();
}

Status MetadataCache::MarkDirty(uint64_t host_offset) {
  auto it = index_.find(host_offset);
  if (it == index_.end())
    return Status::InvalidArgument(name_ + ": MarkDirty of an uncached table");
  Entry& entry = entries_[it->second];
  entry.dirty = true;
  if (!writethrough_) return Status::Ok();
  QCRASH_RETURN_IF_ERROR(SatisfyDependencies());
  QCRASH_RETURN_IF_ERROR(WriteEntry(entry));
  // Why: writethrough makes each metadata write durable before the next one.
  return io_.DeviceFlush(Rule::kEveryWrite);
}

Status MetadataCache::SatisfyDependencies() {
  if (ignore_dependencies_) {
    depends_on_ = nullptr;
    depends_on_flush_ = false;
    return Status::Ok();
  }
  if (depends_on_ != nullptr) {
    MetadataCache* other = depends_on_;
    depends_on_ = nullptr;
    // Why: the tables of `other` (say refcount blocks) must be durable before
    // any of ours (say L2 tables) can point at what they describe.
    const uint64_t generation = io_.flush_generation();
    QCRASH_RETURN_IF_ERROR(other->Flush(depends_on_rule_));
    // other->Flush() skips the device flush when its tables are durable
    // already; only a flush that happened covers the guest data below.
    if (io_.flush_generation() != generation) depends_on_flush_ = false;
  }
  if (depends_on_flush_) {
    depends_on_flush_ = false;
    if (io_.has_data_device()) {
      // Why (R12): the guest data lives in the external data file; only its
      // flush orders the data before our tables, the image file need not be
      // flushed. The data-file-no-flush switch leaves it out.
      if (data_file_barrier_) {
        QCRASH_RETURN_IF_ERROR(io_.FlushDataFile(Rule::kDataFileBeforePointer));
      }
    } else {
      // Why: guest data written earlier must be durable before our tables expose it.
      QCRASH_RETURN_IF_ERROR(io_.DeviceFlush(Rule::kDataBeforePointer));
    }
  }
  return Status::Ok();
}

Status MetadataCache::WriteEntry(Entry& entry) {
  Status written = io_.WriteMetadata(entry.host_offset, entry.bytes);
  if (!written.ok()) {
    // Why: the table on disk is not this one; a later write-back must try again.
    if (!keep_dirty_on_failed_write_) entry.dirty = false;
    return written;
  }
  entry.dirty = false;
  unflushed_generation_ = io_.flush_generation();
  return Status::Ok();
}

Status MetadataCache::WriteBack() {
  if (!has_dirty()) return Status::Ok();
  QCRASH_RETURN_IF_ERROR(SatisfyDependencies());
  // Ascending host order: deterministic, and what a sequential device likes.
  std::vector<Entry*> dirty;
  for (Entry& e : entries_) {
    if (e.dirty) dirty.push_back(&e);
  }
  std::sort(dirty.begin(), dirty.end(),
            [](const Entry* a, const Entry* b) { return a->host_offset < b->host_offset; });
  for (Entry* e : dirty) QCRASH_RETURN_IF_ERROR(WriteEntry(*e));
  return Status::Ok();
}

Status MetadataCache::Flush(Rule why) {
  QCRASH_RETURN_IF_ERROR(WriteBack());
  if (unflushed_generation_ != io_.flush_generation()) return Status::Ok();
  // Why: callers flush a cache to make its tables durable before something
  // that relies on them is written.
  return io_.DeviceFlush(why);
}

void MetadataCache::Drop(uint64_t host_offset) {
  auto it = index_.find(host_offset);
  if (it == index_.end()) return;
  Entry& entry = entries_[it->second];
  entry.dirty = false;
  entry.last_use = 0;
  entry.host_offset = ~uint64_t{0};
  index_.erase(it);
}

Status MetadataCache::SetDependency(MetadataCache* other, Rule why) {
  if (ignore_dependencies_ || other == this || depends_on_ == other) return Status::Ok();
  if (other->depends_on_ != nullptr) {
    // `other` itself waits on a cache (typically on us): satisfy that first
    // so the dependency graph never holds a cycle.
    QCRASH_RETURN_IF_ERROR(other->SatisfyDependencies());
  }
  if (depends_on_ != nullptr && depends_on_ != other) {
    QCRASH_RETURN_IF_ERROR(SatisfyDependencies());
  }
  depends_on_ = other;
  depends_on_rule_ = why;
  return Status::Ok();
}

size_t MetadataCache::dirty_count() const {
  return static_cast<size_t>(
      std::count_if(entries_.begin(), entries_.end(), [](const Entry& e) { return e.dirty; }));
}

bool MetadataCache::has_dirty() const {
  return std::any_of(entries_.begin(), entries_.end(), [](const Entry& e) { return e.dirty; });
}

}  // namespace qcrash::engine
