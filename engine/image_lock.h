// ImageLock: the advisory lock QEMU 7.2 takes on an image file, so that a
// repair refuses an image another QEMU process (or qcrash) has open for
// writing, and QEMU refuses to write an image qcrash is repairing.
//
// QEMU's protocol (block/file-posix.c, raw_apply_lock_bytes and
// raw_check_lock_bytes) uses open-file-description locks (fcntl F_OFD_SETLK),
// shared (F_RDLCK) and one byte long:
//   byte 100 + i  held by every user that holds permission bit i
//   byte 200 + i  held by every user that does not share permission bit i
// with bit 0 consistent-read, 1 write, 2 write-unchanged, 3 resize.
// A user wanting permission i first tests byte 200 + i for another holder
// ("Failed to get "write" lock"); a user not sharing i tests byte 100 + i
// ("Failed to get shared "write" lock"). The locks live as long as the file
// description, and closing it drops them; locks of the same description never
// conflict with each other, so the lock uses its own description.
#pragma once

#include <memory>
#include <string>

#include "engine/status.h"

namespace qcrash::engine {

class ImageLock {
 public:
  enum class Access : uint8_t {
    kRead,   // a consistent read (check): no one else may write or resize
    kWrite,  // a writer (repair): consistent read, write and resize, shared with no writer
  };

  // Takes QEMU's locks on `path`. Busy when another process holds a
  // conflicting permission, with QEMU's wording.
  static Result<std::unique_ptr<ImageLock>> Acquire(const std::string& path, Access access);

  ~ImageLock();
  ImageLock(const ImageLock&) = delete;
  ImageLock& operator=(const ImageLock&) = delete;

 private:
  explicit ImageLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace qcrash::engine
