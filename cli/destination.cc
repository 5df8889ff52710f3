// Destination: refuse, lock, write beside, rename.
#include "cli/destination.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "cli/cli_common.h"

namespace qcrash::cli {

std::optional<FileId> IdOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileId{st.st_dev, st.st_ino};
}

std::vector<ProtectedFile> ChainOf(const std::string& path, const std::string& role) {
  std::vector<ProtectedFile> out;
  const std::vector<ChainFile> chain = BackingChain(path);
  for (size_t depth = 0; depth < chain.size(); ++depth) {
    out.push_back({chain[depth].name, depth == 0 ? role
                                                 : "a file of the backing chain of " + role + " (" +
                                                       chain[depth].name + ")"});
  }
  return out;
}

Status RefuseIfProtected(const std::string& path, const std::vector<ProtectedFile>& protect) {
  const std::optional<FileId> id = IdOf(path);
  if (!id) return Status::Ok();
  for (const ProtectedFile& file : protect) {
    if (IdOf(file.path) == id) {
      return Status::InvalidArgument(
          "the destination is " + file.role +
          " (the same file by device and inode); refusing to overwrite it");
    }
  }
  return Status::Ok();
}

namespace {

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status Errno(const std::string& path, const char* what) {
  return Status::IoError(path + ": " + what + ": " + std::strerror(errno));
}

// The mode a new file gets from open(2) with 0666, as qemu-img's files do.
mode_t DefaultMode() {
  const mode_t mask = ::umask(0);
  ::umask(mask);
  return 0666 & ~mask;
}

}  // namespace

Result<std::unique_ptr<Destination>> Destination::Open(const std::string& path,
                                                       const std::vector<ProtectedFile>& protect) {
  QCRASH_RETURN_IF_ERROR(RefuseIfProtected(path, protect));
  std::unique_ptr<Destination> d(new Destination());
  d->path_ = path;
  struct stat st {};
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) return Status::InvalidArgument("is a directory");
  if (exists && !S_ISREG(st.st_mode)) {
    d->in_place_ = true;
    QCRASH_ASSIGN_OR_RETURN(d->device_, FileDevice::Open(path, FileDevice::Mode::kReadWrite));
    return d;
  }
  mode_t mode = DefaultMode();
  if (exists) {
    // The old file stays as it is until the rename, but no one may be using
    // it: qemu-img would fail to get its write lock.
    QCRASH_ASSIGN_OR_RETURN(d->lock_,
                            engine::ImageLock::Acquire(path, engine::ImageLock::Access::kWrite));
    mode = st.st_mode & 07777;
    // Replace what a symlink points to, not the link.
    char resolved[PATH_MAX];
    if (::realpath(path.c_str(), resolved) != nullptr) d->path_ = resolved;
  }
  std::string pattern = DirectoryOf(d->path_) + "/.qcrash-XXXXXX";
  const int fd = ::mkstemp(pattern.data());
  if (fd < 0) return Errno(pattern, "mkstemp");
  d->temp_path_ = pattern;
  const bool chmod_ok = ::fchmod(fd, mode) == 0;
  ::close(fd);
  if (!chmod_ok) return Errno(d->temp_path_, "fchmod");
  QCRASH_ASSIGN_OR_RETURN(d->device_,
                          FileDevice::Open(d->temp_path_, FileDevice::Mode::kReadWrite));
  return d;
}

Destination::~Destination() {
  device_.reset();
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

Status Destination::Commit() {
  QCRASH_RETURN_IF_ERROR(device_->Flush());
  if (in_place_) {
    committed_ = true;
    return Status::Ok();
  }
  if (::fsync(device_->fd()) != 0) return Errno(temp_path_, "fsync");
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) return Errno(path_, "rename");
  committed_ = true;
  // The rename is durable once the directory is.
  const std::string dir = DirectoryOf(path_);
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return Errno(dir, "open");
  const int rc = ::fsync(dir_fd);
  ::close(dir_fd);
  if (rc != 0) return Errno(dir, "fsync");
  return Status::Ok();
}

}  // namespace qcrash::cli
