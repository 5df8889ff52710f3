// How a command that writes a new file (create, convert) opens it, so that a
// bad command never loses anything: the destination is compared by device and
// inode with every file the command reads (the source and its backing chain),
// whatever the spelling (./a, a symlink, a hard link); an existing destination
// is locked as QEMU locks an image before anything is written; and the new
// contents go to a temporary file beside it, renamed over it only when they
// are complete and durable. A failed command leaves the old file as it was.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/file_device.h"
#include "engine/image_lock.h"
#include "engine/status.h"

namespace qcrash::cli {

// A file's identity: the same (device, inode) is the same file.
struct FileId {
  dev_t device = 0;
  ino_t inode = 0;
  bool operator==(const FileId&) const = default;
};

// The identity of the file `path` names (symlinks followed), or nullopt when
// nothing is there.
std::optional<FileId> IdOf(const std::string& path);

// A file the command reads and so must never write, with the name to report.
struct ProtectedFile {
  std::string path;
  std::string role;  // "the source", "the backing file of the source", ...
};

// Every file of `path`'s backing chain (itself first), for ProtectedFile lists.
std::vector<ProtectedFile> ChainOf(const std::string& path, const std::string& role);

// InvalidArgument naming `path` and the protected file it is, or Ok.
Status RefuseIfProtected(const std::string& path, const std::vector<ProtectedFile>& protect);

class Destination {
 public:
  // Refuses a destination that is one of `protect`, locks an existing one
  // (Busy, with QEMU's wording, when another process holds it) and creates
  // the temporary file that receives the new contents. A destination that
  // exists and is not a regular file (a block device, /dev/null) is written
  // in place.
  static Result<std::unique_ptr<Destination>> Open(const std::string& path,
                                                   const std::vector<ProtectedFile>& protect);
  // Unlinks the temporary file unless Commit() succeeded.
  ~Destination();
  Destination(const Destination&) = delete;
  Destination& operator=(const Destination&) = delete;

  FileDevice& device() { return *device_; }
  bool regular() const { return !in_place_; }
  // Makes the new contents durable and puts them in place (rename, then the
  // directory's sync).
  Status Commit();

 private:
  Destination() = default;

  std::string path_;       // the file to replace (a symlink resolved)
  std::string temp_path_;  // empty when written in place
  bool in_place_ = false;
  bool committed_ = false;
  std::unique_ptr<engine::ImageLock> lock_;
  std::unique_ptr<FileDevice> device_;
};

}  // namespace qcrash::cli
