// Status and StatusOr: how canopy reports what can go wrong at a module boundary (a bad
// file, a dead peer, malformed input). Bugs are CHECKed instead (common/check.h); running
// out of capacity is an empty result, not a Status.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "common/check.h"

namespace canopy {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,    // the caller passed something unusable
  kNotFound,           // a file, tensor, key or node that is not there
  kDataLoss,           // a corrupt or truncated file or message
  kUnimplemented,      // a valid input we do not support (a tensor type, an architecture)
  kIoError,            // the OS said no
  kFailedPrecondition, // called in the wrong state
  kOutOfRange,         // an index or offset past the end
  kUnavailable,        // a peer is gone
  kInternal,
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "DataLoss: gguf: model.gguf: tensor 'blk.0.ffn_up.weight' at offset 1234: ..."
  std::string ToString() const;

  // Returns a copy whose message is `context + ": " + message()`.
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgumentError(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFoundError(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status DataLossError(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status UnimplementedError(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }
inline Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
inline Status FailedPreconditionError(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
inline Status OutOfRangeError(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
inline Status UnavailableError(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status InternalError(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const T& value) : value_(value) {}                   // NOLINT: implicit by design
  StatusOr(T&& value) : value_(std::move(value)) {}             // NOLINT
  StatusOr(Status status) : status_(std::move(status)) {        // NOLINT
    CANOPY_CHECK(!status_.ok()) << "StatusOr built from an OK Status without a value";
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  T& value() & { CheckOk(); return *value_; }
  const T& value() const& { CheckOk(); return *value_; }
  T&& value() && { CheckOk(); return std::move(*value_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void CheckOk() const { CANOPY_CHECK(status_.ok()) << "value() of a failed StatusOr: " << status_.ToString(); }

  Status status_;
  std::optional<T> value_;
};

}  // namespace canopy

#define CANOPY_CONCAT_INNER_(a, b) a##b
#define CANOPY_CONCAT_(a, b) CANOPY_CONCAT_INNER_(a, b)

#define CANOPY_RETURN_IF_ERROR(expr)                  \
  do {                                                \
    ::canopy::Status canopy_status_ = (expr);         \
    if (!canopy_status_.ok()) return canopy_status_;  \
  } while (0)

#define CANOPY_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()

// CANOPY_ASSIGN_OR_RETURN(auto x, MaybeX());
#define CANOPY_ASSIGN_OR_RETURN(lhs, expr) \
  CANOPY_ASSIGN_OR_RETURN_IMPL_(CANOPY_CONCAT_(canopy_statusor_, __LINE__), lhs, expr)
