#pragma once
// Small kj helpers shared by the agent's and the collector's network code.

#include <kj/async.h>
#include <kj/timer.h>

#include <string>

namespace outpost::net {

// An exception whose description is exactly `text` (KJ_EXCEPTION would add
// "name = " before a non-literal); the peer of an RPC call sees it as is.
inline kj::Exception error_text(const std::string& text,
                                kj::Exception::Type type = kj::Exception::Type::FAILED) {
  return kj::Exception(type, __FILE__, __LINE__, kj::heapString(text.c_str(), text.size()));
}

// `promise`, or a DISCONNECTED error naming `what` once `limit` has passed.
template <typename T>
kj::Promise<T> within(kj::Timer& timer, kj::Promise<T> promise, kj::Duration limit, const char* what) {
  return promise.exclusiveJoin(timer.afterDelay(limit).then([what]() -> T {
    throw error_text(std::string("timed out waiting for ") + what, kj::Exception::Type::DISCONNECTED);
  }));
}

}  // namespace outpost::net
