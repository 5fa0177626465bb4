#pragma once
// A Cap'n Proto MessageStream over a byte stream that remembers why the
// connection on it failed. The RPC system drops a connection whose stream
// broke (a TLS error, a reset) or whose peer sent a malformed message
// without saying why; on a malformed message it sends the peer an Abort
// with its reason, so both are seen here, as is an Abort from the peer.
// Lives on the kj loop that reads it.

#include <capnp/rpc.capnp.h>
#include <capnp/serialize-async.h>
#include <capnp/serialize.h>
#include <kj/async-io.h>

#include <string>

namespace outpost::net {

class WatchedMessageStream final : public capnp::MessageStream {
 public:
  explicit WatchedMessageStream(kj::AsyncIoStream& stream) : inner_(stream) {}

  // Why the connection failed, or empty while it works and when it was
  // closed cleanly (by the peer, or by us without an error).
  std::string failure() const {
    if (!read_error_.empty()) return read_error_;
    if (!sent_abort_.empty()) return "protocol error: " + sent_abort_;
    if (!got_abort_.empty()) return "the peer aborted: " + got_abort_;
    return {};
  }

  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> tryReadMessage(
      kj::ArrayPtr<kj::AutoCloseFd> fdSpace, capnp::ReaderOptions options,
      kj::ArrayPtr<capnp::word> scratchSpace) override {
    return inner_.tryReadMessage(fdSpace, options, scratchSpace)
        .then(
            [this](kj::Maybe<capnp::MessageReaderAndFds>&& message) {
              KJ_IF_MAYBE(m, message) note_abort(*m->reader, got_abort_);
              return kj::mv(message);
            },
            [this](kj::Exception&& e) -> kj::Maybe<capnp::MessageReaderAndFds> {
              if (read_error_.empty()) read_error_ = e.getDescription().cStr();
              kj::throwFatalException(kj::mv(e));
            });
  }
  kj::Promise<void> writeMessage(kj::ArrayPtr<const int> fds,
                                 kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) override {
    note_sent(segments);
    return inner_.writeMessage(fds, segments);
  }
  kj::Promise<void> writeMessages(
      kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) override {
    for (auto segments : messages) note_sent(segments);
    return inner_.writeMessages(messages);
  }
  kj::Maybe<int> getSendBufferSize() override { return inner_.getSendBufferSize(); }
  kj::Promise<void> end() override { return inner_.end(); }

 private:
  // Keeps the reason of the first Abort for an error in `message`; a message
  // too broken to tell is the RPC system's to refuse.
  static void note_abort(capnp::MessageReader& message, std::string& reason) {
    if (!reason.empty()) return;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                  auto m = message.getRoot<capnp::rpc::Message>();
                  // Not a lost connection: the RPC system "aborts" on those too.
                  if (m.isAbort() && m.getAbort().getType() != capnp::rpc::Exception::Type::DISCONNECTED)
                    reason = m.getAbort().getReason().cStr();
                })) {
      (void)e;
    }
  }
  void note_sent(kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) {
    if (!sent_abort_.empty()) return;
    capnp::SegmentArrayMessageReader message(segments);
    note_abort(message, sent_abort_);
  }

  capnp::AsyncIoMessageStream inner_;
  std::string read_error_, sent_abort_, got_abort_;
};

}  // namespace outpost::net
