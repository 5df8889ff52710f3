// QEMU-compatible OFD byte locks on an image file (see image_lock.h).
#include "engine/image_lock.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace qcrash::engine {
namespace {

constexpr off_t kPermBase = 100;    // RAW_LOCK_PERM_BASE
constexpr off_t kSharedBase = 200;  // RAW_LOCK_SHARED_BASE
constexpr int kPermCount = 4;
constexpr unsigned kConsistentRead = 1u << 0;
constexpr unsigned kWrite = 1u << 1;
constexpr unsigned kWriteUnchanged = 1u << 2;
constexpr unsigned kResize = 1u << 3;
constexpr unsigned kAllPerms = kConsistentRead | kWrite | kWriteUnchanged | kResize;
const char* const kPermNames[kPermCount] = {"consistent read", "write", "write unchanged",
                                            "resize"};

struct flock ByteLock(short type, off_t offset) {
  struct flock lock;
  std::memset(&lock, 0, sizeof(lock));
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  lock.l_start = offset;
  lock.l_len = 1;
  return lock;
}

// True when another open file description holds a lock on the byte.
Result<bool> HeldByOther(int fd, off_t offset) {
  struct flock lock = ByteLock(F_WRLCK, offset);
  if (fcntl(fd, F_OFD_GETLK, &lock) != 0) {
    return Status::IoError(std::string("F_OFD_GETLK: ") + std::strerror(errno));
  }
  return lock.l_type != F_UNLCK;
}

Status LockByte(int fd, off_t offset) {
  struct flock lock = ByteLock(F_RDLCK, offset);
  if (fcntl(fd, F_OFD_SETLK, &lock) != 0) {
    return Status::Busy(std::string("F_OFD_SETLK: ") + std::strerror(errno));
  }
  return Status::Ok();
}

Status Busy(const std::string& path, bool shared, int bit) {
  return Status::Busy(std::string("Failed to get ") + (shared ? "shared " : "") + "\"" +
                      kPermNames[bit] + "\" lock\nIs another process using the image [" + path +
                      "]?");
}

}  // namespace

Result<std::unique_ptr<ImageLock>> ImageLock::Acquire(const std::string& path, Access access) {
  const unsigned perm =
      access == Access::kWrite ? kConsistentRead | kWrite | kResize : kConsistentRead;
  const unsigned shared = kConsistentRead | kWriteUnchanged;  // neither writers nor resizers
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IoError(path + ": " + std::strerror(errno));
  std::unique_ptr<ImageLock> lock(new ImageLock(fd));
  for (int i = 0; i < kPermCount; ++i) {
    if (perm & (1u << i)) {
      QCRASH_ASSIGN_OR_RETURN(const bool held, HeldByOther(fd, kSharedBase + i));
      if (held) return Busy(path, false, i);
    }
    if ((kAllPerms & ~shared) & (1u << i)) {
      QCRASH_ASSIGN_OR_RETURN(const bool held, HeldByOther(fd, kPermBase + i));
      if (held) return Busy(path, true, i);
    }
  }
  for (int i = 0; i < kPermCount; ++i) {
    if (perm & (1u << i)) QCRASH_RETURN_IF_ERROR(LockByte(fd, kPermBase + i));
    if ((kAllPerms & ~shared) & (1u << i)) QCRASH_RETURN_IF_ERROR(LockByte(fd, kSharedBase + i));
  }
  return lock;
}

ImageLock::~ImageLock() { ::close(fd_); }

}  // namespace qcrash::engine
