#pragma once
// Simulated agents for `outpost-bench fleet`: many per thread, each with its
// own certificate and its own mutual-TLS connection, speaking the agent's
// protocol (protocol.capnp: hello, then uploads on the events lane) the way
// the agent's link does: a row made is sent at once (up to 8 uploads in
// flight) or, with a maximum delay, once its oldest unsent row is that old;
// a lost connection is retried after the agent's own backoff (exponential,
// full jitter, from 1 s to 60 s) and resumes from the collector's mark,
// sending again what was not stored. Rows are timed from when they
// were made (steady clock) to the answer that says they are stored.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tools/fleet_certs.hpp"

namespace outpost::bench {

struct FleetSimConfig {
  std::string host = "127.0.0.1";
  std::vector<uint16_t> ports;   // the collectors: agent i connects to ports[i % size]
  std::string ca_pem;            // the CA's certificate (text): the only one trusted
  std::string server_name = "localhost";
  double rate = 10;              // rows per second per agent
  int max_delay_ms = 0;          // 0: each row sent as soon as it is made
  unsigned threads = 2;          // event loops the agents are spread over
  unsigned connect_parallel = 64;  // connection attempts under way per thread (except in a storm)
  size_t row_bytes = 200;        // payload per row
};

struct FleetCounters {
  size_t agents = 0;
  size_t connected = 0;           // with a session now
  uint64_t connects = 0;          // sessions opened
  uint64_t connect_failures = 0;  // attempts that ended before a session
  uint64_t disconnects = 0;       // sessions lost
  uint64_t made = 0;              // rows made in the window
  uint64_t stored = 0;            // of those, answered as stored
  uint64_t stored_during = 0;     // rows (of any time) answered while the window was open
  std::map<std::string, uint64_t> failures;  // why attempts and sessions ended, with their counts
};

class FleetSim {
 public:
  // Makes `agents` certificates ("fleet-<i>") and starts the threads; the
  // agents connect at once, at most connect_parallel per thread at a time.
  FleetSim(const FleetSimConfig& config, FleetCerts& certs, size_t agents);
  ~FleetSim();  // stops the threads (connections are dropped, nothing waits)
  FleetSim(const FleetSim&) = delete;
  FleetSim& operator=(const FleetSim&) = delete;

  // Any thread.
  FleetCounters counters() const;
  // Rows made from now on are measured; until end_window().
  void start_window();
  void end_window();
  // The latencies (ms) of the window's rows answered so far, unsorted.
  std::vector<float> latencies_ms() const;
  // Every connected agent drops its connection and all reconnect at once.
  void reconnect_all();

 private:
  class Loop;
  size_t agents_;
  std::vector<std::unique_ptr<Loop>> loops_;
  std::vector<std::thread> threads_;
  std::atomic<int64_t> window_start_{INT64_MAX}, window_end_{INT64_MAX};
  std::atomic<uint64_t> storm_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace outpost::bench
