#include "tools/fleet_sim.hpp"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/compat/tls.h>

#include <fmt/format.h>

#include <chrono>
#include <deque>
#include <mutex>
#include <random>

#include "net/agent/backoff.hpp"
#include "net/kj_util.hpp"
#include "net/upload_size.hpp"
#include "schemas/codec.hpp"
#include "schemas/protocol.capnp.h"

namespace outpost::bench {
namespace {

constexpr unsigned kUploadsInFlight = 8;  // as the agent's link (kUploadWindow)
constexpr size_t kMaxRowsPerUpload = 1000;
constexpr int64_t kTickNs = 5'000'000;
constexpr auto kSessionLimit = 30 * kj::SECONDS;  // connect, TLS handshake and hello

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The simulated agent answers `status` (so that the benchmark can time an
// admin command that needs the agent's connection) and nothing else: every
// other request is answered as not implemented.
class SimController final : public protocol::AgentController::Server {
 public:
  explicit SimController(std::string id) : id_(std::move(id)) {}
  kj::Promise<void> status(StatusContext context) override {
    context.getResults().setJson(fmt::format(R"({{"agent": "{}", "simulated": true}})", id_));
    return kj::READY_NOW;
  }

 private:
  std::string id_;
};

struct Row {
  uint64_t seq;
  int64_t made_ns;
};

struct SimAgent {
  enum class State { idle, connecting, connected };
  std::string id;
  size_t collector = 0;  // its index in FleetSimConfig::ports
  kj::Own<kj::TlsContext> tls;
  schemas::Encoded record;  // every row of this agent carries this record

  State state = State::idle;
  uint64_t generation = 0;  // of its connection: answers to an older one are ignored
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> client;
  kj::Maybe<protocol::Session::Client> session;
  kj::Promise<void> task = nullptr;  // the connection: its attempt, then its end
  int64_t retry_at = 0;
  net::ReconnectBackoff backoff{net::BackoffPolicy{}};  // the agent's own (net/agent/backoff.hpp)

  uint64_t last_seq = 0;  // the last row made
  uint64_t after = 0;     // the last seq sent in this session (or the collector's mark)
  int64_t next_row = 0;   // when its next row is due
  std::deque<Row> unsent, unanswered;
  unsigned in_flight = 0;
  // Answers kept until the next upload goes out, as the agent's link does
  // (net/agent/net_client.cpp): dropping one sends its Finish message.
  std::vector<capnp::Response<protocol::Session::UploadResults>> answered;
};

}  // namespace

class FleetSim::Loop final : private kj::TaskSet::ErrorHandler {
 public:
  Loop(FleetSim& owner, const FleetSimConfig& config, std::vector<SimAgent> agents)
      : owner_(owner), config_(config), agents_(std::move(agents)) {}

  void run() {
    auto io = net::setup_async_io();
    io_ = &io;
    kj::TaskSet uploads(*this);
    uploads_ = &uploads;
    std::mt19937_64 random(agents_.size() * 7919 + 1);
    int64_t start = steady_ns(), period = static_cast<int64_t>(1e9 / config_.rate);
    for (auto& a : agents_) a.next_row = start + static_cast<int64_t>(random() % static_cast<uint64_t>(period));
    for (auto port : config_.ports)
      addrs_.push_back(io.provider->getNetwork().parseAddress(config_.host, port).wait(io.waitScope));
    auto done = kj::newPromiseAndFulfiller<void>();
    done_ = kj::mv(done.fulfiller);
    kj::Promise<void> ticking = tick().eagerlyEvaluate(nullptr);
    done.promise.wait(io.waitScope);
    for (auto& a : agents_) drop(a);  // before the loop they live on goes
    graveyard_.clear();
    uploads_ = nullptr;
    addrs_.clear();
  }

  FleetCounters counters() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return counters_;
  }
  std::vector<float> latencies() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return latencies_;
  }

 private:
  void taskFailed(kj::Exception&&) override {}  // uploads handle their own errors

  kj::Promise<void> tick() {
    return io_->provider->getTimer().afterDelay(kTickNs * kj::NANOSECONDS).then([this]() -> kj::Promise<void> {
      if (owner_.stop_.load()) {
        done_->fulfill();
        return kj::READY_NOW;
      }
      graveyard_.clear();
      int64_t now = steady_ns();
      uint64_t storm = owner_.storm_.load();
      if (storm != storm_) {
        storm_ = storm;
        for (auto& a : agents_) {
          if (a.state == SimAgent::State::connected) lost(a, a.generation, now, false, "");
          a.retry_at = now;
        }
      }
      bool storming = storm_ != 0;
      for (auto& a : agents_) {
        make_rows(a, now);
        if (a.state == SimAgent::State::idle && a.retry_at <= now &&
            (storming || connecting_ < config_.connect_parallel))
          connect(a);
        if (a.state == SimAgent::State::connected) send(a, now);
      }
      return tick();
    });
  }

  bool in_window(int64_t t) const { return t >= owner_.window_start_.load() && t < owner_.window_end_.load(); }

  void make_rows(SimAgent& a, int64_t now) {
    int64_t period = static_cast<int64_t>(1e9 / config_.rate);
    uint64_t made = 0;
    while (a.next_row <= now) {
      a.unsent.push_back({++a.last_seq, a.next_row});
      if (in_window(a.next_row)) ++made;
      a.next_row += period;
    }
    if (made) {
      std::lock_guard<std::mutex> lock(mutex_);
      counters_.made += made;
    }
  }

  void send(SimAgent& a, int64_t now) {
    int64_t delay = int64_t{config_.max_delay_ms} * 1'000'000;
    while (!a.unsent.empty() && a.in_flight < kUploadsInFlight &&
           (now - a.unsent.front().made_ns >= delay || a.unsent.size() >= kMaxRowsPerUpload)) {
      size_t n = std::min(a.unsent.size(), kMaxRowsPerUpload);
      auto req = KJ_ASSERT_NONNULL(a.session).uploadRequest(
          net::upload_request_size(n, n * a.record.bytes().size()));
      req.setLane(schemas::Lane::EVENTS);
      req.setAfter(a.after);
      auto list = req.initRecords(static_cast<unsigned>(n));
      for (size_t i = 0; i < n; ++i) {
        list[i].setSeq(a.unsent.front().seq);
        list[i].setData(a.record.bytes());
        a.unanswered.push_back(a.unsent.front());
        a.unsent.pop_front();
      }
      a.after = a.unanswered.back().seq;
      ++a.in_flight;
      uint64_t generation = a.generation;
      uploads_->add(req.send().then(
          [this, &a, generation](capnp::Response<protocol::Session::UploadResults> resp) {
            if (generation != a.generation) return;
            --a.in_flight;
            a.backoff.stored();
            stored(a, resp.getStoredThrough());
            a.answered.push_back(kj::mv(resp));
          },
          [this, &a, generation](kj::Exception&& e) {
            lost(a, generation, steady_ns(), true, e.getDescription().cStr());
          }));
      a.answered.clear();
    }
  }

  void stored(SimAgent& a, uint64_t through) {
    int64_t now = steady_ns();
    bool during = in_window(now);
    std::lock_guard<std::mutex> lock(mutex_);
    while (!a.unanswered.empty() && a.unanswered.front().seq <= through) {
      const Row& row = a.unanswered.front();
      if (in_window(row.made_ns)) {
        ++counters_.stored;
        latencies_.push_back(static_cast<float>((now - row.made_ns) / 1e6));
      }
      if (during) ++counters_.stored_during;
      a.unanswered.pop_front();
    }
  }

  void connect(SimAgent& a) {
    a.state = SimAgent::State::connecting;
    ++connecting_;
    uint64_t generation = ++a.generation;
    auto attempt = addrs_[a.collector]->connect()
                       .then([&a, this](kj::Own<kj::AsyncIoStream> stream) {
                         return a.tls->wrapClient(kj::mv(stream), config_.server_name);
                       })
                       .then([&a](kj::Own<kj::AsyncIoStream> stream) {
                         a.stream = kj::mv(stream);
                         a.client = kj::heap<capnp::TwoPartyClient>(*a.stream);
                         auto req = a.client->bootstrap().castAs<protocol::Collector>().helloRequest();
                         auto info = req.initAgent();
                         info.setMajorVersion(protocol::MAJOR_VERSION);
                         info.setMinorVersion(protocol::MINOR_VERSION);
                         info.setHostname(a.id);
                         info.setSoftware("outpost-bench fleet");
                         req.setController(kj::heap<SimController>(a.id));
                         return kj::Promise<capnp::Response<protocol::Collector::HelloResults>>(req.send());
                       });
    a.task = net::within(io_->provider->getTimer(), kj::mv(attempt), kSessionLimit, "a session")
                 .then([this, &a, generation](capnp::Response<protocol::Collector::HelloResults> resp) {
                   uint64_t mark = 0;
                   for (auto m : resp.getResumeFrom())
                     if (m.getLane() == schemas::Lane::EVENTS) mark = m.getSeq();
                   a.session = resp.getSession();
                   a.state = SimAgent::State::connected;
                   a.backoff.connected(std::chrono::steady_clock::now());
                   --connecting_;
                   // Rows the collector stored whose answer never came (the
                   // connection ended first): its marks say so, as an answer would.
                   while (!a.unsent.empty() && a.unsent.front().seq <= mark) {
                     a.unanswered.push_back(a.unsent.front());
                     a.unsent.pop_front();
                   }
                   stored(a, mark);
                   a.after = mark;
                   {
                     std::lock_guard<std::mutex> lock(mutex_);
                     ++counters_.connected;
                     ++counters_.connects;
                   }
                   return a.client->onDisconnect();
                 })
                 .then([this, &a, generation] { lost(a, generation, steady_ns(), true, "the collector closed it"); },
                       [this, &a, generation](kj::Exception&& e) {
                         lost(a, generation, steady_ns(), true, e.getDescription().cStr());
                       })
                 .eagerlyEvaluate(nullptr);
  }

  // The connection of `generation` ended (or is dropped): what it had not
  // stored goes back to be sent again; a new attempt after the agent's
  // backoff (`backoff`) or at once.
  void lost(SimAgent& a, uint64_t generation, int64_t now, bool backoff, const std::string& why) {
    if (generation != a.generation || a.state == SimAgent::State::idle) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // Counted by the reason's first 60 characters (kj's include a file and line first).
      if (!why.empty()) {
        size_t colon = why.find(": ");
        std::string key = why.rfind("/", 0) == 0 && colon != std::string::npos ? why.substr(colon + 2) : why;
        ++counters_.failures[key.substr(0, 60)];
      }
      if (a.state == SimAgent::State::connected) {
        --counters_.connected;
        ++counters_.disconnects;
      } else {
        ++counters_.connect_failures;
      }
    }
    if (a.state == SimAgent::State::connecting) --connecting_;
    drop(a);
    a.retry_at = now;
    if (backoff) a.retry_at += std::chrono::nanoseconds(a.backoff.next(std::chrono::steady_clock::now())).count();
  }

  void drop(SimAgent& a) {
    ++a.generation;
    a.state = SimAgent::State::idle;
    a.session = nullptr;
    a.in_flight = 0;
    a.answered.clear();
    while (!a.unanswered.empty()) {
      a.unsent.push_front(a.unanswered.back());
      a.unanswered.pop_back();
    }
    // Not destroyed here: this may run inside the task's own continuation.
    graveyard_.push_back(Grave{kj::mv(a.stream), kj::mv(a.client), kj::mv(a.task)});
  }

  FleetSim& owner_;
  const FleetSimConfig& config_;
  std::vector<SimAgent> agents_;
  kj::AsyncIoContext* io_ = nullptr;
  kj::TaskSet* uploads_ = nullptr;
  std::vector<kj::Own<kj::NetworkAddress>> addrs_;  // of the collectors
  kj::Own<kj::PromiseFulfiller<void>> done_;
  // A dropped connection's parts, destroyed at the next tick: the task
  // first, then the RPC client, then the stream under it.
  struct Grave {
    kj::Own<kj::AsyncIoStream> stream;
    kj::Own<capnp::TwoPartyClient> client;
    kj::Promise<void> task;
  };
  std::vector<Grave> graveyard_;
  unsigned connecting_ = 0;
  uint64_t storm_ = 0;

  mutable std::mutex mutex_;  // the counters and latencies, read by other threads
  FleetCounters counters_;
  std::vector<float> latencies_;
};

FleetSim::FleetSim(const FleetSimConfig& config, FleetCerts& certs, size_t agents) : agents_(agents) {
  kj::TlsCertificate ca(kj::StringPtr(config.ca_pem.c_str()));
  kj::TlsPrivateKey key(kj::StringPtr(certs.key_pem().c_str()));
  std::string payload(config.row_bytes, 'x');
  unsigned threads = std::max(1u, config.threads);
  std::vector<std::vector<SimAgent>> shares(threads);
  for (size_t i = 0; i < agents; ++i) {
    SimAgent a;
    a.id = "fleet-" + std::to_string(i);
    if (config.ports.empty()) throw std::runtime_error("fleet: no collector port");
    a.collector = i % config.ports.size();
    std::string pem = certs.cert_pem(a.id);
    kj::TlsKeypair pair{key, kj::TlsCertificate(kj::StringPtr(pem.c_str()))};
    kj::TlsContext::Options options;
    options.useSystemTrustStore = false;
    options.trustedCertificates = kj::arrayPtr(&ca, 1);
    options.defaultKeypair = pair;
    options.minVersion = kj::TlsVersion::TLS_1_2;
    a.tls = kj::heap<kj::TlsContext>(kj::mv(options));
    schemas::RowBatchWriter batch(1, "Fleet.Synthetic", "", schemas::Lane::EVENTS, {"Agent", "Payload"});
    auto row = batch.add_row();
    row[0].setText(a.id.c_str());
    row[1].setText(payload.c_str());
    a.record = batch.finish();
    shares[i % threads].push_back(std::move(a));
  }
  for (auto& share : shares) loops_.push_back(std::make_unique<Loop>(*this, config, std::move(share)));
  for (auto& loop : loops_) threads_.emplace_back([l = loop.get()] { l->run(); });
}

FleetSim::~FleetSim() {
  stop_ = true;
  for (auto& t : threads_) t.join();
}

FleetCounters FleetSim::counters() const {
  FleetCounters sum;
  for (auto& l : loops_) {
    auto c = l->counters();
    sum.connected += c.connected;
    sum.connects += c.connects;
    sum.connect_failures += c.connect_failures;
    sum.disconnects += c.disconnects;
    sum.made += c.made;
    sum.stored += c.stored;
    sum.stored_during += c.stored_during;
    for (auto& [why, n] : c.failures) sum.failures[why] += n;
  }
  sum.agents = agents_;
  return sum;
}

void FleetSim::start_window() {
  window_end_ = INT64_MAX;
  window_start_ = steady_ns();
}

void FleetSim::end_window() { window_end_ = steady_ns(); }

std::vector<float> FleetSim::latencies_ms() const {
  std::vector<float> all;
  for (auto& l : loops_) {
    auto part = l->latencies();
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

void FleetSim::reconnect_all() { ++storm_; }

}  // namespace outpost::bench
