// A host program as a vendor writes one, for the kill -9 test
// (host_sink_test.cpp): an agent whose link is this program's sink, which
// stores every batch in a file, durably, before it acknowledges it, and
// drops what it stored before (by lane and seq) when it comes again.
//
//   outpost-test-sink-host DIR produce   rows from a synthetic query, until killed; a writer
//                                        thread stores the batches handed over, slowly, and
//                                        acknowledges each once the next is stored
//   outpost-test-sink-host DIR drain     no query: stores what the buffer holds, then stops
//                                        and prints {"stored":N,"skipped":M}
//
// DIR/rows holds "<lane> <seq> <json line>" per row, and after each batch
// "# <lane> <last seq>": only what precedes the last such line was stored
// (a kill may have cut what follows).

#include <fcntl.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>

#include "outpost/outpost.hpp"
#include "schemas/json_reader.hpp"

namespace {

struct Store {
  std::string path;
  int fd = -1;
  std::map<std::string, uint64_t> stored_through;  // lane -> last seq stored
  uint64_t stored = 0, skipped = 0;

  // Keeps what precedes the last batch marker; reads the marks from it.
  explicit Store(std::string p) : path(std::move(p)) {
    std::ifstream in(path);
    std::string line;
    size_t keep = 0, offset = 0;
    while (std::getline(in, line)) {
      offset += line.size() + 1;
      if (line.rfind("# ", 0) != 0 || in.eof()) continue;
      std::istringstream marker(line.substr(2));
      std::string lane;
      uint64_t seq = 0;
      if (marker >> lane >> seq) stored_through[lane] = seq, keep = offset;
    }
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(keep)) != 0 || ::lseek(fd, 0, SEEK_END) < 0) {
      std::perror(path.c_str());
      std::exit(2);
    }
  }

  // Stores the records not stored before, then the marker; true once durable.
  bool store(const outpost::SinkBatch& batch) {
    uint64_t& through = stored_through[batch.lane];
    std::string text;
    for (auto& r : batch.records) {
      if (r.seq <= through) {
        ++skipped;
        continue;
      }
      std::istringstream lines(r.json);
      for (std::string line; std::getline(lines, line);)
        text += batch.lane + " " + std::to_string(r.seq) + " " + line + "\n";
      ++stored;
    }
    uint64_t last = batch.records.back().seq;
    if (last <= through) return true;
    text += "# " + batch.lane + " " + std::to_string(last) + "\n";
    for (size_t done = 0; done < text.size();) {
      ssize_t n = ::write(fd, text.data() + done, text.size() - done);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    if (::fdatasync(fd) != 0) return false;
    through = last;
    return true;
  }
};

std::string config(const std::string& dir, bool produce) {
  return "buffer: {dir: " + dir + "/buffer, limit: 64MiB}\n"
         "link: host\n"
         "inspector: {socket: ~}\n"
         "event_table: []\n" +
         std::string(produce ? "queries:\n"
                               "  - name: rows\n"
                               "    id: 3\n"
                               "    source: {type: synthetic, rate: 20000, row_size: 16}\n"
                             : "queries: []\n");
}

// Records the buffer holds, from the buffer's status in status_json().
std::optional<uint64_t> buffered(const outpost::Agent& agent) {
  auto actors = outpost::schemas::Json::parse(agent.status_json());
  for (auto& a : actors.a)
    if (a["Kind"].s == "buffer") {
      uint64_t n = 0;
      for (auto& [lane, counts] : a["Status"]["lanes"].o) n += counts["records"].u();
      return n;
    }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || (std::string(argv[2]) != "produce" && std::string(argv[2]) != "drain")) {
    std::fprintf(stderr, "usage: %s DIR produce|drain\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  bool produce = std::string(argv[2]) == "produce";
  Store store(dir + "/rows");
  std::mutex mutex;
  std::condition_variable handed;
  std::deque<std::pair<outpost::SinkBatch, outpost::SinkAck>> queue;  // produce: handed, not yet stored

  outpost::AgentOptions options;
  options.config_yaml = config(dir, produce);
  options.origin = dir + " (sink host)";
  options.sink = [&](const outpost::SinkBatch& batch, outpost::SinkAck ack) {
    std::lock_guard<std::mutex> lock(mutex);
    if (produce) {  // stored and acknowledged later, on the writer thread
      queue.emplace_back(batch, ack);
      return handed.notify_one();
    }
    if (!store.store(batch)) throw std::runtime_error("cannot store in " + store.path);
    ack();
  };
  outpost::Agent agent(options);
  if (auto r = agent.start(); !r) {
    std::fprintf(stderr, "start: %s: %s\n", outpost::to_string(r.code), r.message.c_str());
    return 1;
  }
  if (produce) {  // a slow writer, until killed; each batch acknowledged once the next is stored
    std::optional<outpost::SinkAck> stored;
    for (;;) {
      std::unique_lock<std::mutex> lock(mutex);
      handed.wait(lock, [&] { return !queue.empty(); });
      auto [batch, ack] = std::move(queue.front());
      queue.pop_front();
      lock.unlock();
      usleep(5000);
      if (!store.store(batch)) return 1;
      if (stored) (*stored)();
      stored = ack;
    }
  }
  while (buffered(agent).value_or(1) > 0) usleep(20000);
  auto r = agent.stop();
  std::lock_guard<std::mutex> lock(mutex);
  std::printf("{\"stored\":%llu,\"skipped\":%llu}\n", static_cast<unsigned long long>(store.stored),
              static_cast<unsigned long long>(store.skipped));
  return r ? 0 : 1;
}
