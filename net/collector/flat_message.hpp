#pragma once
// Cap'n Proto messages as flat bytes, for what the collector keeps (its
// LMDB state, the key-value bucket) and sends between collectors (the
// relay). Pure; any thread.

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstring>
#include <string>

namespace outpost::net {

// A value of T as a flat message.
template <typename T>
std::string encode(typename T::Reader value) {
  capnp::MallocMessageBuilder message;
  message.setRoot(value);
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

// Any message's root (an interface's params or results) as a flat message.
inline std::string encode_any(capnp::AnyPointer::Reader value) {
  capnp::MallocMessageBuilder message;
  message.getRoot<capnp::AnyPointer>().set(value);
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

// An owned, aligned copy of a flat message, read as T. Malformed bytes
// throw kj::Exception (here or when read).
template <typename T>
class Decoded {
 public:
  explicit Decoded(const std::string& bytes)
      : words_(kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word))) {
    std::memcpy(words_.begin(), bytes.data(), words_.size() * sizeof(capnp::word));
    reader_ = kj::heap<capnp::FlatArrayMessageReader>(words_);
  }
  typename T::Reader get() { return reader_->getRoot<T>(); }

 private:
  kj::Array<capnp::word> words_;
  kj::Own<capnp::FlatArrayMessageReader> reader_;
};

}  // namespace outpost::net
