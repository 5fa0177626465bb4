#include "tests/fault_proxy/fault_proxy.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "tests/fault_proxy/flow.hpp"
#include "tests/fault_proxy/socket.hpp"

namespace outpost::testing {
namespace {

using relay::Address;
using relay::Clock;
using relay::Flow;
using relay::TimePoint;
using std::chrono::milliseconds;

// A cut half-closes a socket and keeps draining it for up to this long before closing it:
// closing a socket with unread input sends RST, which would turn the cut into a reset.
constexpr auto kLingerLimit = std::chrono::seconds(2);
// accept() failing for want of descriptors leaves the listener readable, so poll() would return at
// once, forever. The relay stops watching it this long instead.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(50);

struct Counters {
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> upstream_failures{0};
  std::atomic<uint64_t> bytes_upstream{0};
  std::atomic<uint64_t> bytes_downstream{0};
  std::atomic<uint64_t> active{0};
};

// A client socket and its upstream twin. Closing moves the sockets out; the relay then drops it.
struct Connection {
  Connection(kj::AutoCloseFd client_fd, kj::AutoCloseFd upstream_fd, Counters& counters)
      : client(std::move(client_fd)),
        upstream(std::move(upstream_fd)),
        up(client.get(), upstream.get(), counters.bytes_upstream),
        down(upstream.get(), client.get(), counters.bytes_downstream) {}

  bool open() const { return client.get() >= 0; }
  void abort() {
    relay::close_with_rst(std::move(client));
    relay::close_with_rst(std::move(upstream));
  }

  kj::AutoCloseFd client;
  kj::AutoCloseFd upstream;
  bool connecting = true;  // Until the upstream connect() completes.
  Flow up;
  Flow down;
};

struct Settings {
  milliseconds delay{0};
  uint64_t rate = 0;
  bool blackhole = false;
  bool refuse = false;
  milliseconds cut_every{0};
};

enum class Close { kFin, kRst };

// What the controls ask of the relay thread.
struct Wanted {
  Settings settings;
  std::vector<Close> closes;
};

}  // namespace

class FaultProxy::Relay {
 public:
  Relay(uint16_t upstream_port, const std::string& upstream_host)
      : upstream_(relay::resolve(upstream_host, upstream_port)),
        listener_(relay::listen_on_loopback()),
        port_(relay::local_port(listener_)),
        wake_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (wake_.get() < 0) relay::throw_errno("eventfd failed");
    thread_ = std::thread([this] { run(); });
  }

  ~Relay() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake();
    thread_.join();
  }

  uint16_t port() const { return port_; }

  template <typename Edit>
  void request(Edit edit) {
    std::unique_lock<std::mutex> lock(mutex_);
    edit(wanted_);
    uint64_t ticket = ++requested_;
    wake();
    applied_changed_.wait(lock, [&] { return applied_ >= ticket; });
  }

  Counters counters;

 private:
  struct Lingering {
    kj::AutoCloseFd fd;
    TimePoint deadline;
  };

  void wake() {
    uint64_t one = 1;
    while (write(wake_.get(), &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

  void run() {
    std::vector<pollfd> polled;
    for (;;) {
      if (!take_requests()) return;
      TimePoint now = Clock::now();
      if (now >= next_cut_) {
        close_all(Close::kFin, now);
        next_cut_ = now + settings_.cut_every;
      }
      pump(now);
      auto done = [&](const Lingering& l) { return l.fd.get() < 0 || l.deadline <= now; };
      lingering_.erase(std::remove_if(lingering_.begin(), lingering_.end(), done),
                       lingering_.end());

      polled.clear();
      polled.push_back({wake_.get(), POLLIN, 0});
      bool listening = now >= accept_paused_until_;
      polled.push_back({listening ? listener_.get() : -1, POLLIN, 0});
      for (const auto& c : connections_) watch(*c, polled);
      for (const auto& l : lingering_) polled.push_back({l.fd.get(), POLLIN, 0});
      TimePoint deadline = next_deadline();
      if (!listening) deadline = std::min(deadline, accept_paused_until_);
      if (poll(polled.data(), polled.size(), timeout_until(deadline)) < 0) {
        if (errno == EINTR) continue;
        relay::throw_errno("poll failed");
      }
      dispatch(polled, Clock::now());
    }
  }

  // Adopts what the controls asked for; false when the relay must stop.
  bool take_requests() {
    Wanted wanted;
    uint64_t ticket;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return false;
      if (requested_ == applied_) return true;
      wanted.settings = wanted_.settings;
      wanted.closes.swap(wanted_.closes);
      ticket = requested_;
    }
    TimePoint now = Clock::now();
    if (wanted.settings.rate != settings_.rate) {
      // Pacing debt run up at the old rate mustn't stall the new one.
      for (auto& c : connections_) {
        c->up.restart_pacing(now);
        c->down.restart_pacing(now);
      }
    }
    if (wanted.settings.cut_every != settings_.cut_every) {
      bool periodic = wanted.settings.cut_every.count() > 0;
      next_cut_ = periodic ? now + wanted.settings.cut_every : TimePoint::max();
    }
    settings_ = wanted.settings;
    for (Close how : wanted.closes) close_all(how, now);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      applied_ = ticket;
    }
    applied_changed_.notify_all();
    return true;
  }

  void close_all(Close how, TimePoint now) {
    // A connection still in the listen backlog is current to its client: its connect() returned.
    accept_pending();
    for (auto& c : connections_) {
      if (!c->open()) continue;
      if (how == Close::kRst) {
        c->abort();
      } else {
        linger(std::move(c->client), now);
        linger(std::move(c->upstream), now);
      }
    }
    sweep();
  }

  void linger(kj::AutoCloseFd fd, TimePoint now) {
    if (shutdown(fd.get(), SHUT_WR) == 0) lingering_.push_back({std::move(fd), now + kLingerLimit});
  }

  void accept_pending() {
    for (;;) {
      kj::AutoCloseFd client(accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (client == nullptr) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (!relay::would_block(errno)) accept_paused_until_ = Clock::now() + kAcceptBackoff;
        break;
      }
      ++counters.accepted;
      if (settings_.refuse) {
        relay::close_with_rst(std::move(client));
        continue;
      }
      kj::AutoCloseFd upstream = relay::start_connect(upstream_);
      if (upstream == nullptr) {
        fail_upstream(std::move(client));
        continue;
      }
      relay::set_nodelay(client);
      connections_.push_back(
          std::make_unique<Connection>(std::move(client), std::move(upstream), counters));
      ++counters.active;
    }
  }

  // Connecting directly, the client would have been refused; RST is the nearest thing now.
  void fail_upstream(kj::AutoCloseFd client) {
    ++counters.upstream_failures;
    relay::close_with_rst(std::move(client));
  }

  void finish_connect(Connection& c) {
    int error = 0;
    socklen_t size = sizeof error;
    if (getsockopt(c.upstream.get(), SOL_SOCKET, SO_ERROR, &error, &size) != 0 || error != 0) {
      c.upstream = nullptr;
      fail_upstream(std::move(c.client));
      return;
    }
    c.connecting = false;
    relay::set_nodelay(c.upstream);
  }

  // Writes what delay and rate allow; retires connections with both directions finished.
  void pump(TimePoint now) {
    if (!settings_.blackhole) {
      for (auto& c : connections_) {
        if (!c->open() || c->connecting) continue;
        if (!c->up.write(now, settings_.rate) || !c->down.write(now, settings_.rate)) {
          c->abort();
        } else if (c->up.finished() && c->down.finished()) {
          // Both peers sent FIN and everything was read: a plain close can't turn into RST.
          c->client = nullptr;
          c->upstream = nullptr;
        }
      }
    }
    sweep();
  }

  void sweep() {
    connections_.erase(std::remove_if(connections_.begin(), connections_.end(),
                                      [](const auto& c) { return !c->open(); }),
                       connections_.end());
    counters.active = connections_.size();
  }

  void watch(const Connection& c, std::vector<pollfd>& polled) const {
    short client = 0;
    short upstream = 0;
    if (!settings_.blackhole) {
      if (c.up.wants_read()) client |= POLLIN;
      if (c.down.write_blocked()) client |= POLLOUT;
      if (!c.connecting && c.down.wants_read()) upstream |= POLLIN;
      if (!c.connecting && c.up.write_blocked()) upstream |= POLLOUT;
    }
    if (c.connecting) upstream = POLLOUT;
    // poll() reports hangups even on sockets nobody asked about; left in, an idle socket whose
    // peer has gone would wake the loop forever. fd -1 leaves it out.
    polled.push_back({client ? c.client.get() : -1, client, 0});
    polled.push_back({upstream ? c.upstream.get() : -1, upstream, 0});
  }

  // The polled set is wake, listener, a (client, upstream) pair per connection, then lingering.
  void dispatch(const std::vector<pollfd>& polled, TimePoint now) {
    if (polled[0].revents) {
      uint64_t ignored;
      while (read(wake_.get(), &ignored, sizeof ignored) < 0 && errno == EINTR) {
      }
    }
    size_t i = 2;
    // accept_pending() below only appends, so the watched connections keep their positions.
    size_t watched = connections_.size();
    for (size_t k = 0; k < watched; ++k, i += 2) {
      on_ready(*connections_[k], polled[i], polled[i + 1], now);
    }
    for (auto& l : lingering_) {
      if (polled[i++].revents) drain(l);
    }
    if (polled[1].revents) accept_pending();
  }

  void on_ready(Connection& c, const pollfd& client, const pollfd& upstream, TimePoint now) {
    if (client.revents && !on_socket(c.up, c.down, client.revents, now)) {
      c.abort();
      return;
    }
    if (!upstream.revents) return;
    if (c.connecting) {
      finish_connect(c);
    } else if (!on_socket(c.down, c.up, upstream.revents, now)) {
      c.abort();
    }
  }

  // `source` reads from the socket that polled ready; `sink` writes to it.
  bool on_socket(Flow& source, Flow& sink, short revents, TimePoint now) {
    if (revents & (POLLOUT | POLLERR | POLLHUP)) sink.unblock();  // pump() writes, or fails.
    if (source.wants_read() && (revents & (POLLIN | POLLERR | POLLHUP))) {
      return source.read(now, settings_.delay);
    }
    return true;
  }

  // Discards input until the peer closes too (see kLingerLimit); bounded so a chatty peer can't
  // monopolise the loop.
  void drain(Lingering& l) {
    char discard[relay::kReadSize];
    for (int i = 0; i < 16; ++i) {
      ssize_t n = recv(l.fd.get(), discard, sizeof discard, 0);
      if (n > 0) continue;
      if (n < 0 && (errno == EINTR || relay::would_block(errno))) return;
      l.fd = nullptr;
      return;
    }
  }

  TimePoint next_deadline() const {
    TimePoint next = next_cut_;
    for (const auto& l : lingering_) next = std::min(next, l.deadline);
    if (settings_.blackhole) return next;
    for (const auto& c : connections_) {
      if (c->connecting) continue;
      for (const Flow* flow : {&c->up, &c->down}) {
        if (auto due = flow->next_due(settings_.rate)) next = std::min(next, *due);
      }
    }
    return next;
  }

  static int timeout_until(TimePoint deadline) {
    if (deadline == TimePoint::max()) return -1;
    auto ms = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::clamp<decltype(ms)>(ms, 0, INT_MAX));
  }

  const Address upstream_;
  const kj::AutoCloseFd listener_;
  const uint16_t port_;
  const kj::AutoCloseFd wake_;

  std::mutex mutex_;
  std::condition_variable applied_changed_;
  Wanted wanted_;           // Guarded by mutex_.
  uint64_t requested_ = 0;  // Guarded by mutex_.
  uint64_t applied_ = 0;    // Guarded by mutex_.
  bool stopping_ = false;   // Guarded by mutex_.

  // Owned by the relay thread.
  Settings settings_;
  TimePoint next_cut_ = TimePoint::max();
  TimePoint accept_paused_until_{};
  std::vector<std::unique_ptr<Connection>> connections_;
  std::vector<Lingering> lingering_;

  std::thread thread_;  // Last: it starts once everything above exists.
};

FaultProxy::FaultProxy(uint16_t upstream_port, std::string upstream_host)
    : relay_(std::make_unique<Relay>(upstream_port, upstream_host)) {}

FaultProxy::~FaultProxy() = default;

uint16_t FaultProxy::port() const { return relay_->port(); }

void FaultProxy::cut() {
  relay_->request([](Wanted& w) { w.closes.push_back(Close::kFin); });
}
void FaultProxy::reset() {
  relay_->request([](Wanted& w) { w.closes.push_back(Close::kRst); });
}
void FaultProxy::set_delay(milliseconds delay) {
  relay_->request([&](Wanted& w) { w.settings.delay = delay; });
}
void FaultProxy::set_rate(uint64_t bytes_per_second) {
  relay_->request([&](Wanted& w) { w.settings.rate = bytes_per_second; });
}
void FaultProxy::blackhole(bool on) {
  relay_->request([&](Wanted& w) { w.settings.blackhole = on; });
}
void FaultProxy::refuse(bool on) {
  relay_->request([&](Wanted& w) { w.settings.refuse = on; });
}
void FaultProxy::cut_every(milliseconds period) {
  relay_->request([&](Wanted& w) { w.settings.cut_every = period; });
}

uint64_t FaultProxy::connections_accepted() const { return relay_->counters.accepted; }
uint64_t FaultProxy::upstream_failures() const { return relay_->counters.upstream_failures; }
uint64_t FaultProxy::bytes_upstream() const { return relay_->counters.bytes_upstream; }
uint64_t FaultProxy::bytes_downstream() const { return relay_->counters.bytes_downstream; }
uint64_t FaultProxy::active_connections() const { return relay_->counters.active; }

}  // namespace outpost::testing
