// An agent inside a host program, through the public API only. The host is
// the agent's link (its sink receives what the buffer holds and acknowledges
// it) and one of its sources (it pushes its own events into a query); it
// also runs a query once and prints the agent's status.
// Usage: embed-cpp DIR (the agent keeps its buffer below DIR).
#include <outpost/outpost.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <iostream>
#include <mutex>
#include <string>

namespace {

// The agent's configuration (keys as in outpost::Agent::default_config_yaml()):
// its buffer below `dir`, the host as its link, no inspector socket, and one
// query whose rows the host pushes.
outpost::AgentOptions agent_options(const std::string& dir) {
  outpost::AgentOptions options;
  options.origin = "embed-cpp";
  options.config_yaml = "buffer: {dir: '" + dir + "/buffer', limit: 64MiB}\n"
                        "link: host\n"
                        "inspector: {socket: ~}\n"
                        "event_table: []\n"
                        "queries:\n"
                        "  - name: logins\n"
                        "    source: {type: host}\n";
  return options;
}

// True when `result` is ok; otherwise says what failed.
bool ok(const outpost::Result& result, const char* what) {
  if (!result)
    std::cerr << "embed-cpp: " << what << ": " << outpost::to_string(result.code) << ": " << result.message << "\n";
  return static_cast<bool>(result);
}

// What the sink received: a real host stores each batch durably before it
// acknowledges it (and drops a seq it stored before: after a crash, what it
// had not acknowledged comes again).
struct Received {
  std::mutex mutex;
  std::condition_variable more;
  uint64_t rows = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: embed-cpp DIR\n";
    return 2;
  }
  const uint64_t kLogins = 1000;
  Received received;
  auto options = agent_options(argv[1]);
  options.sink = [&received](const outpost::SinkBatch& batch, outpost::SinkAck ack) {
    std::lock_guard<std::mutex> lock(received.mutex);
    for (auto& record : batch.records) {
      if (record.seq == batch.records.front().seq) std::cout << batch.lane << " " << record.json;
      received.rows += record.rows;
    }
    ack();  // stored: the buffer may delete the batch
    received.more.notify_all();
  };
  outpost::Agent agent(options);
  if (!ok(agent.start(), "start")) return 1;

  // The host's own events, as rows of the query `logins`. would_block says
  // the buffer is at its limit: wait until it takes rows again.
  for (uint64_t n = 0; n < kLogins; ++n) {
    outpost::Row row{{"User", std::string("alice")}, {"Event", std::string("login")}, {"N", n}};
    outpost::Result pushed;
    while ((pushed = agent.push("logins", row)).code == outpost::Errc::would_block)
      if (!ok(agent.wait_writable("logins", std::chrono::seconds(60)), "wait")) return 1;
    if (!ok(pushed, "push")) return 1;
  }
  bool all = false;
  {
    std::unique_lock<std::mutex> lock(received.mutex);
    all = received.more.wait_for(lock, std::chrono::seconds(60), [&] { return received.rows >= kLogins; });
  }
  if (!all) std::cerr << "embed-cpp: the sink did not receive every login\n";

  int rows = 0;
  auto print = [&rows](const std::string& row) {
    std::cout << row << "\n";
    ++rows;
    return true;  // false would end the query here
  };
  bool queried = ok(agent.run_query("SELECT Hostname, OS, Architecture, Pid FROM info()", print), "query");
  if (queried && rows == 0) {
    std::cerr << "embed-cpp: query: no row\n";
    queried = false;
  }
  std::cout << agent.status_json() << "\n";

  bool stopped = ok(agent.stop(), "stop");
  return all && queried && stopped ? 0 : 1;
}
