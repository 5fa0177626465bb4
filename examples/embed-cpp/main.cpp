// An agent inside a host program, through the public API only. The host is
// the agent's link (its sink receives what the buffer holds and acknowledges
// it) and one of its sources (it pushes its own events into a query); it
// gives VQL a plugin and a function of its own, runs a query with them once
// and prints the agent's status.
// Usage: embed-cpp DIR (the agent keeps its buffer below DIR).
#include <outpost/outpost.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

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

// The host's own VQL plugin: host_sessions() lists the host's sessions, a
// slice of at most `budget` rows per call, so that it never holds the
// agent's thread for long.
class Sessions : public outpost::PluginStream {
 public:
  explicit Sessions(int64_t count) : count_(count) {}
  outpost::PluginStep next(std::vector<outpost::Row>& rows, size_t budget) override {
    for (; next_ < count_ && budget > 0; ++next_, --budget)
      rows.push_back({{"Session", next_}, {"User", std::string(next_ % 3 ? "alice" : "root")}});
    return next_ < count_ ? outpost::PluginStep::more() : outpost::PluginStep::done();
  }

 private:
  int64_t next_ = 0, count_;
};

outpost::PluginDef sessions_plugin() {
  outpost::PluginDef def;
  def.name = "host_sessions";
  def.description = "The host's sessions.";
  def.args = {{"count", "int", false, "how many (default 10)"}};
  def.open = [](const outpost::Arguments& args, outpost::WakeCallback) {
    auto* count = args.find("count");
    if (count && !std::holds_alternative<int64_t>(*count)) throw std::invalid_argument("count: expected an int");
    return std::make_unique<Sessions>(count ? std::get<int64_t>(*count) : 10);
  };
  return def;
}

// And a function: host_privileged(user) is true for the host's admins.
outpost::FunctionDef privileged_function() {
  outpost::FunctionDef def;
  def.name = "host_privileged";
  def.description = "Whether the host counts `user` as an admin.";
  def.args = {{"user", "string", true, ""}};
  def.call = [](const outpost::Arguments& args) -> outpost::Value {
    auto* user = args.find("user");
    return user && *user == outpost::Value(std::string("root"));
  };
  return def;
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
  options.plugins = {sessions_plugin()};
  options.functions = {privileged_function()};
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
  // The host's plugin and function, as VQL calls them: 4 of its 12 sessions are root's.
  rows = 0;
  queried = ok(agent.run_query("SELECT Session, User FROM host_sessions(count=12) WHERE host_privileged(user=User)",
                               print),
               "query") && queried;
  if (queried && rows != 4) {
    std::cerr << "embed-cpp: query: " << rows << " privileged sessions, not 4\n";
    queried = false;
  }
  std::cout << agent.status_json() << "\n";

  bool stopped = ok(agent.stop(), "stop");
  return all && queried && stopped ? 0 : 1;
}
