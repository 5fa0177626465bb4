#pragma once
#include <stdexcept>
#include <string>

namespace outpost::persistence {

// Every failure names the call, the file or sub-database, and the cause.
class StoreError : public std::runtime_error {
 public:
  StoreError(const std::string& what, int code = 0) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }  // errno or MDB_* code; 0 when neither applies

 private:
  int code_;
};

// The buffer directory is owned by another live process.
class StoreLocked : public StoreError {
  using StoreError::StoreError;
};

}  // namespace outpost::persistence
