// FileDevice: positioned I/O with EINTR and short-transfer loops.
#include "engine/file_device.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace qcrash {

Result<std::unique_ptr<FileDevice>> FileDevice::Open(const std::string& path, Mode mode) {
  int flags = O_CLOEXEC;
  switch (mode) {
    case Mode::kReadOnly:
      flags |= O_RDONLY;
      break;
    case Mode::kReadWrite:
      flags |= O_RDWR;
      break;
    case Mode::kCreate:
      flags |= O_RDWR | O_CREAT | O_TRUNC;
      break;
  }
  const int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) return Status::IoError(path + ": open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int saved = errno;
    ::close(fd);
    return Status::IoError(path + ": fstat: " + std::strerror(saved));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return Status::InvalidArgument(path + ": is a directory");
  }
  return std::unique_ptr<FileDevice>(
      new FileDevice(path, fd, static_cast<uint64_t>(st.st_size), mode != Mode::kReadOnly));
}

FileDevice::FileDevice(std::string path, int fd, uint64_t size_bytes, bool writable)
    : path_(std::move(path)), fd_(fd), size_bytes_(size_bytes), writable_(writable) {}

FileDevice::~FileDevice() { ::close(fd_); }

Status FileDevice::Errno(const char* what, uint64_t offset_bytes) const {
  const int saved = errno;
  std::string message =
      path_ + ": " + what + " at " + HexOffset(offset_bytes) + ": " + std::strerror(saved);
  if (saved == ENOSPC || saved == EDQUOT) return Status::NoSpace(message);
  return Status::IoError(message);
}

Status FileDevice::Read(uint64_t offset_bytes, std::span<uint8_t> out) {
  if (offset_bytes > size_bytes_ || out.size() > size_bytes_ - offset_bytes) {
    return Status::IoError(path_ + ": read of " + std::to_string(out.size()) + " bytes at " +
                           HexOffset(offset_bytes) + " past the end of the file");
  }
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset_bytes + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("pread", offset_bytes + done);
    }
    if (n == 0)
      return Status::IoError(path_ + ": file shrank under us at " + HexOffset(offset_bytes + done));
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status FileDevice::Write(uint64_t offset_bytes, std::span<const uint8_t> data) {
  if (!writable_) return Status::ReadOnly(path_ + ": opened read-only");
  // pwrite(2) of zero bytes leaves the file's size alone; so does our size.
  if (data.empty()) return Status::Ok();
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done,
                               static_cast<off_t>(offset_bytes + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("pwrite", offset_bytes + done);
    }
    done += static_cast<size_t>(n);
  }
  if (offset_bytes + data.size() > size_bytes_) size_bytes_ = offset_bytes + data.size();
  return Status::Ok();
}

Status FileDevice::WriteFua(uint64_t offset_bytes, std::span<const uint8_t> data) {
  QCRASH_RETURN_IF_ERROR(Write(offset_bytes, data));
  // POSIX has no per-write FUA; a data sync after the write gives the same promise.
  return Flush();
}

Status FileDevice::Flush() {
  if (!writable_) return Status::Ok();
  if (::fdatasync(fd_) != 0) return Errno("fdatasync", 0);
  return Status::Ok();
}

Status FileDevice::Resize(uint64_t size_bytes, ResizeMode mode) {
  if (!writable_) return Status::ReadOnly(path_ + ": opened read-only");
  if (::ftruncate(fd_, static_cast<off_t>(size_bytes)) != 0) return Errno("ftruncate", size_bytes);
  if (mode == ResizeMode::kAllocate && size_bytes > size_bytes_) {
    const int rc = ::posix_fallocate(fd_, static_cast<off_t>(size_bytes_),
                                     static_cast<off_t>(size_bytes - size_bytes_));
    // Some file systems cannot preallocate; a sparse file still reads as zeroes.
    if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
      errno = rc;
      return Errno("posix_fallocate", size_bytes_);
    }
  }
  size_bytes_ = size_bytes;
  return Status::Ok();
}

}  // namespace qcrash
