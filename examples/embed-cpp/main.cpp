// An agent inside a host program, through the public API only: start it, run
// one query and print its rows, print the agent's status, stop it.
// Usage: embed-cpp DIR (the agent keeps its buffer below DIR).
#include <outpost/outpost.hpp>

#include <iostream>
#include <string>

namespace {

// The agent's configuration (keys as in outpost::Agent::default_config_yaml()):
// its buffer below `dir`, no link (rows stay in the buffer), no inspector
// socket, and no query of its own.
outpost::AgentOptions agent_options(const std::string& dir) {
  outpost::AgentOptions options;
  options.origin = "embed-cpp";
  options.config_yaml = "buffer: {dir: '" + dir + "/buffer', limit: 64MiB}\n"
                        "link: offline\n"
                        "inspector: {socket: ~}\n"
                        "event_table: []\n"
                        "queries: []\n";
  return options;
}

// True when `result` is ok; otherwise says what failed.
bool ok(const outpost::Result& result, const char* what) {
  if (!result)
    std::cerr << "embed-cpp: " << what << ": " << outpost::to_string(result.code) << ": " << result.message << "\n";
  return static_cast<bool>(result);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: embed-cpp DIR\n";
    return 2;
  }
  outpost::Agent agent(agent_options(argv[1]));
  if (!ok(agent.start(), "start")) return 1;

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
  return queried && stopped ? 0 : 1;
}
