// Names and formatting for Status.
#include "engine/status.h"

#include <cstdio>

namespace qcrash {

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kIoError:
      return "I/O error";
    case StatusCode::kNoSpace:
      return "No space";
    case StatusCode::kCorruption:
      return "Corruption";
    case StatusCode::kInvalidArgument:
      return "Invalid argument";
    case StatusCode::kNotSupported:
      return "Not supported";
    case StatusCode::kReadOnly:
      return "Read-only";
    case StatusCode::kBusy:
      return "Busy";
    case StatusCode::kLimit:
      return "Limit exceeded";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(StatusCodeName(code_)) + ": " + message_;
}

Status Status::WithContext(const std::string& context) const {
  if (ok()) return *this;
  return Status(code_, context + ": " + message_);
}

std::string HexOffset(uint64_t offset) {
  char buffer[24];
  std::snprintf(buffer, sizeof buffer, "0x%llx", static_cast<unsigned long long>(offset));
  return buffer;
}

}  // namespace qcrash
