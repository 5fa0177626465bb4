#pragma once
// Admin calls between the collectors of a fleet (the jetstream backend),
// over NATS, so that an admin command works through any collector: each
// collector subscribes to
//   <prefix>.agent.<agent token>
// while that agent is connected to it (hold/release); a collector asked
// about an agent connected elsewhere sends the call there (ask: NATS
// request/reply, answered by whichever holder answers first). No
// subscriber at all ("no responders") means the agent is connected
// nowhere: the asker then queues the request in the shared state. A
// request queued for an agent is announced on the same subject (poke) so
// that a collector that holds it sends it at once.
//
// A call is the NATS message's header Outpost-Call (collect, cancel,
// setEventTable, agentStatus, inspector.<method number>.<client key>: on
// the inspector the holder keeps for that asking client, until
// forget-inspector.<client key>; where: the holder's AgentSummary of it,
// answered off its event loop;
// push: no answer) and its data the method's
// params (protocol.capnp's Admin, inspector.capnp's Inspector), encoded;
// the answer's data the results, or the header Outpost-Error (the text),
// or Outpost-Not-Here (the agent left). A call is at most NATS'
// max_payload (1 MiB by default); results bigger than that come in parts,
// each with the header Outpost-Part "<i>/<n>" and Outpost-Answer (which
// answer: a second holder's parts are not mixed in), up to
// max_answer_bytes in all (a bigger answer is an error saying so).
//
// Threads: libnats' threads receive; what they receive is handed to the
// event loop that called start(), where ask() is called; hold() and
// release() wait for NATS to confirm: from another thread.

#include <kj/async-io.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "net/collector/loop_mailbox.hpp"
#include "net/collector/nats_link.hpp"

namespace outpost::net {

struct AdminRelayOptions {
  NatsLink nats;
  std::string prefix = "outpost-admin";  // outside the stream's subjects
  std::chrono::milliseconds answer_timeout{15000};  // an asked collector's answer (the agent's, through it)
  std::chrono::milliseconds connect_timeout{30000};
  size_t max_answer_bytes = 64 << 20;  // results relayed at most (in parts)
};

class AdminRelay {
 public:
  struct Call {
    std::string agent, name, body;
    std::string reply;  // where the answer goes; empty: none wanted (push)
  };
  struct Answer {
    enum Kind { answered, not_here, failed } kind = answered;
    std::string body;   // answered: the results, encoded
    std::string error;  // failed: why
  };
  using Handler = std::function<void(Call)>;
  // The answer to a `where` call about an agent, from what any thread may
  // read: called on libnats' threads, so that a fleet-wide `agents` does not
  // queue a job per agent on loops that may be seconds behind.
  using Where = std::function<Answer(const std::string& agent)>;

  // Connects (libnats' shared delivery threads: one subscription per agent
  // costs no thread); throws StoreError. Blocks: any thread, before start().
  explicit AdminRelay(AdminRelayOptions options);
  ~AdminRelay();
  AdminRelay(const AdminRelay&) = delete;
  AdminRelay& operator=(const AdminRelay&) = delete;

  // On the event loop that serves: calls for agents held here go to
  // `handler` there, but `where` calls to `where` where they arrive (none
  // given: answered "not here"). Before any hold().
  void start(kj::Timer& timer, kj::TaskSet& tasks, Handler handler, Where where = nullptr);
  // Before what `where` uses goes away (the collector that started it): no
  // `where` call reaches it once this returns (one under way is waited for;
  // the handler's calls need no stop, as they run only on the loop's tasks).
  // Any thread.
  void stop();

  // Subscribes to `agent`'s subject (counted: a reconnecting agent's new
  // connection may hold before its old one releases) and waits until NATS
  // confirmed it. Blocks on a round trip: any thread but the event loop.
  // Throws StoreError.
  void hold(const std::string& agent);
  // Its subscription ends when the last hold is released; waits (5 s at
  // most) until NATS confirmed it. Any thread but the event loop.
  void release(const std::string& agent);

  // Event loop: sends `call` to the collector holding `agent`.
  // `extra`: more time than answer_timeout for its answer (a trace's own duration).
  kj::Promise<Answer> ask(const std::string& agent, const std::string& name, const std::string& body,
                          std::chrono::milliseconds extra = {});
  // Event loop, from its busy paths: takes what arrived without waiting for
  // the mailbox's wake (LoopMailbox::run_queued).
  void run_queued() { mailbox_.run_queued(*tasks_); }
  // Event loop (or any thread): answers a call received.
  void answer(const Call& call, const Answer& answer);
  // Any thread: tells the collector holding `agent` that requests wait for it.
  void poke(const std::string& agent);

 private:
  struct Received {
    bool reply = false;  // to one of our asks (token), else a call
    uint64_t token = 0;
    Answer answer;
    Call call;
    std::string answer_id;     // a part's answer
    uint64_t part = 0, parts = 0;  // 0: the whole answer
  };
  // An ask's answer coming in parts: whose, and what came so far.
  struct Partial {
    std::string answer_id, body;
    uint64_t next = 1;
  };
  static void on_call(natsConnection*, natsSubscription*, natsMsg* msg, void* self);
  static void on_reply(natsConnection*, natsSubscription*, natsMsg* msg, void* self);
  void deliver(Received r);  // libnats thread: into the mailbox
  void answer_where(const Call& call) noexcept;  // libnats thread: a `where` call, answered there
  void take(Received r);      // event loop: to the handler, or the ask it answers
  std::string subject(const std::string& agent) const;

  AdminRelayOptions options_;
  NatsConnection nc_;
  std::string inbox_;  // our asks' answers arrive on <inbox_>.<token>
  natsSubscription* replies_ = nullptr;
  std::mutex mutex_;  // the subscriptions
  LoopMailbox mailbox_;  // what libnats' threads received, for the event loop
  struct Held {
    natsSubscription* sub = nullptr;
    int count = 0;
  };
  std::map<std::string, Held> held_;
  std::mutex where_mutex_;
  Where where_;  // under where_mutex_: set by start(), called by libnats' threads, cleared by stop()
  // The event loop's.
  kj::Timer* timer_ = nullptr;
  kj::TaskSet* tasks_ = nullptr;
  Handler handler_;
  uint64_t next_token_ = 1;
  std::map<uint64_t, kj::Own<kj::PromiseFulfiller<Answer>>> asks_;
  std::map<uint64_t, Partial> partial_;  // by token
  std::atomic<uint64_t> next_answer_{1};  // names this relay's answers (with inbox_): any thread
};

}  // namespace outpost::net
