// Status and Result<T>: how every I/O and parsing function in qcrash reports
// failure. engine/ throws no exceptions; a value and an error never share one
// integer.
#pragma once

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace qcrash {

enum class StatusCode : uint8_t {
  kOk = 0,
  kIoError,          // the device failed (EIO, short read, ...)
  kNoSpace,          // the device refused to grow (ENOSPC)
  kCorruption,       // bytes read from disk violate the format: names offset and field
  kInvalidArgument,  // the caller asked for something impossible
  kNotSupported,     // valid per the spec, but not implemented here (an unknown feature bit)
  kReadOnly,         // a write to an image opened (or forced) read-only
  kBusy,             // another process holds the image
  kLimit,            // a hostile size or count beyond qcrash's limits
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;

  static Status Ok() { return Status(); }
  static Status IoError(std::string message) { return {StatusCode::kIoError, std::move(message)}; }
  static Status NoSpace(std::string message) { return {StatusCode::kNoSpace, std::move(message)}; }
  static Status Corruption(std::string message) {
    return {StatusCode::kCorruption, std::move(message)};
  }
  static Status InvalidArgument(std::string message) {
    return {StatusCode::kInvalidArgument, std::move(message)};
  }
  static Status NotSupported(std::string message) {
    return {StatusCode::kNotSupported, std::move(message)};
  }
  static Status ReadOnly(std::string message) {
    return {StatusCode::kReadOnly, std::move(message)};
  }
  static Status Busy(std::string message) { return {StatusCode::kBusy, std::move(message)}; }
  static Status Limit(std::string message) { return {StatusCode::kLimit, std::move(message)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  bool IsCorruption() const { return code_ == StatusCode::kCorruption; }

  // "Corruption: L2 table at 0x50000: entry 3 ..." (or "OK").
  std::string ToString() const;

  // Prefixes the message with context, e.g. the file name: "img.qcow2: ...".
  Status WithContext(const std::string& context) const;

 private:
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A value or the Status explaining why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok() && "a Result built from a Status must carry an error");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

std::string HexOffset(uint64_t offset);  // "0x1f000"

}  // namespace qcrash

#define QCRASH_CONCAT_INNER(a, b) a##b
#define QCRASH_CONCAT(a, b) QCRASH_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function when `expr` is not ok.
#define QCRASH_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::qcrash::Status qcrash_status_ = (expr);        \
    if (!qcrash_status_.ok()) return qcrash_status_; \
  } while (0)

// `QCRASH_ASSIGN_OR_RETURN(auto x, Foo());` binds the value or returns the error.
#define QCRASH_ASSIGN_OR_RETURN(lhs, expr) \
  QCRASH_ASSIGN_OR_RETURN_IMPL(QCRASH_CONCAT(qcrash_result_, __LINE__), lhs, expr)
#define QCRASH_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()
