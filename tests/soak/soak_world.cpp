#include "tests/soak/soak_world.hpp"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <kj/io.h>

#include <cerrno>
#include <cstring>
#include <iterator>
#include <fstream>
#include <random>
#include <vector>

#include "net/collector/collector_store.hpp"
#include "persistence/buffer_store.hpp"
#include "tests/utc_time.hpp"

namespace outpost::soak {

namespace {

constexpr auto kStartLimit = std::chrono::seconds(30);

void run_certs(const std::string& script, const std::vector<std::string>& args, const fs::path& log) {
  std::vector<std::string> argv{script};
  argv.insert(argv.end(), args.begin(), args.end());
  if (testing::wait_exit(testing::spawn(argv, log)) != 0)
    throw SoakError("outpost-certs " + args[0] + " failed: " + testing::slurp(log));
}

}  // namespace

SmallDisk::SmallDisk(fs::path point, uint64_t size_mb) : point_(std::move(point)) {
  fs::create_directories(point_);
  std::string data = "size=" + std::to_string(size_mb) + "m";
  if (::mount("outpost-soak", point_.c_str(), "tmpfs", 0, data.c_str()) != 0)
    throw SoakError("cannot mount a " + std::to_string(size_mb) + " MiB tmpfs at " + point_.string() + ": " +
                    std::strerror(errno));
}

SmallDisk::~SmallDisk() { ::umount2(point_.c_str(), MNT_DETACH); }

uint64_t SmallDisk::fill() {
  kj::AutoCloseFd fd(::open((point_ / "filler").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (fd.get() < 0) throw SoakError("cannot create " + (point_ / "filler").string() + ": " + std::strerror(errno));
  std::vector<char> chunk(64 * 1024, 'f');
  uint64_t written = 0;
  for (;;) {
    ssize_t n = ::write(fd.get(), chunk.data(), chunk.size());
    if (n > 0) {
      written += static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != ENOSPC)
      throw SoakError("filling " + point_.string() + ": " + std::strerror(errno));
    return written;
  }
}

void SmallDisk::free() {
  std::error_code ec;
  fs::remove(point_ / "filler", ec);
}

World::World(WorldOptions options) : options_(std::move(options)), root_(options_.root) {
  if (root_.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "outpost-soak-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw SoakError(std::string("mkdtemp: ") + std::strerror(errno));
    root_ = tmpl;
    remove_root_ = true;
  }
  fs::create_directories(root_);
  if (options_.small_disks)
    mount_disks();
  else
    disks_unavailable_ = "not asked for";
  fs::path certs = path("certs"), log = path("certs.log");
  run_certs(options_.certs_script, {"init", certs.string()}, log);
  run_certs(options_.certs_script, {"agent", certs.string(), "agent-1"}, log);
}

void World::mount_disks() {
  try {
    agent_disk_ = std::make_unique<SmallDisk>(path("agent-disk"), options_.agent_disk_mb);
    collector_disk_ = std::make_unique<SmallDisk>(path("collector-disk"), options_.collector_disk_mb);
  } catch (const SoakError& e) {  // the soak runs, without the disk-full faults
    disks_unavailable_ = e.what();
    agent_disk_.reset();
    collector_disk_.reset();
  }
}

World::~World() {
  if (agent_ > 0) stop_agent(SIGKILL);
  if (collector_ > 0) kill_collector(SIGKILL);
  proxy_.reset();
  agent_disk_.reset();
  collector_disk_.reset();
  std::error_code ec;
  if (remove_root_) fs::remove_all(root_, ec);
}

fs::path World::buffer_dir() const { return (agent_disk_ ? agent_disk_->path() : path("agent-disk")) / "buf"; }
fs::path World::collector_data() const {
  return (collector_disk_ ? collector_disk_->path() : path("collector-disk")) / "data";
}
fs::path World::agent_log(int run) const { return path("agent-" + std::to_string(run) + ".log"); }

fs::path World::collector_log() const { return path("collector-" + std::to_string(collector_starts_) + ".log"); }

// The collector listens on the same port across its restarts (the proxy
// relays to it), below the kernel's ephemeral range (ip_local_port_range,
// 32768 and up by default) so that no outgoing connection takes it meanwhile.
void World::start_collector() {
  bool first = port_ == 0;
  std::mt19937 rng(std::random_device{}());
  for (int attempt = 1;; ++attempt) {
    if (first) port_ = static_cast<uint16_t>(20000 + rng() % 12000);
    if (try_start_collector()) break;
    if (!first || attempt == 5)
      throw SoakError("the collector did not listen on port " + std::to_string(port_) + " within 30 s; its log " +
                      collector_log().string() + ":\n" + testing::slurp(collector_log()));
  }
  if (!proxy_) proxy_ = std::make_unique<testing::FaultProxy>(port_);
}

bool World::try_start_collector() {
  ++collector_starts_;
  fs::path log = collector_log();
  fs::path certs = path("certs");
  collector_ = testing::spawn({options_.collector_binary, "--datadir", collector_data().string(), "--listen",
                               "127.0.0.1:" + std::to_string(port_), "--ca", (certs / "ca.pem").string(),
                               "--cert", (certs / "collector.pem").string(), "--key",
                               (certs / "collector.key").string()},
                              log);
  bool exited = false;
  bool up = testing::eventually(
      [&] {
        if (testing::slurp(log).find("listening on port") != std::string::npos) return true;
        exited = ::waitpid(collector_, nullptr, WNOHANG) == collector_;  // the port taken, say
        return exited;
      },
      kStartLimit);
  if (up && !exited) return true;
  if (!exited) kill_collector(SIGKILL);
  collector_ = -1;
  return false;
}

void World::kill_collector(int signal) {
  if (collector_ <= 0) return;
  ::kill(collector_, signal);
  int code = testing::wait_exit(collector_);
  collector_ = -1;
  if (code < 0) throw SoakError("the collector did not exit within 60 s of signal " + std::to_string(signal));
}

void World::write_agent_config(bool quiet) {
  fs::path certs = path("certs");
  std::ofstream out(path("agent.yaml"), std::ios::trunc);
  out << "buffer: {dir: " << buffer_dir().string() << ", limit: " << options_.buffer_limit << ", sync: full}\n"
      << "link: {type: collector, address: 127.0.0.1:" << proxy_->port() << ", ca: " << (certs / "ca.pem").string()
      << ", cert: " << (certs / "agent-1.pem").string() << ", key: " << (certs / "agent-1.key").string()
      << ", backoff_initial_ms: 50, backoff_cap_ms: 1000}\n"
      << "log: {level: info, file: " << agent_log(run_).string() << "}\n"
      << "inspector: {socket: " << path("inspector.sock").string() << "}\n";
  if (quiet) {
    out << "queries: []\n";
    return;
  }
  out << "queries:\n";
  for (int q = 0; q < options_.queries; ++q)
    out << "  - name: r" << run_ << "q" << q << "\n"
        << "    source: {type: synthetic, rate: " << options_.rate << ", row_size: 64}\n"
        << "    batch: {rows: 100, delay_ms: 20}\n";
}

void World::start_agent(bool quiet) {
  if (!proxy_) throw SoakError("start the collector first: the agent's address is the proxy's");
  ++run_;
  write_agent_config(quiet);
  fs::path log = agent_log(run_);
  fs::path out = path("agent-" + std::to_string(run_) + ".out");  // what it prints before its log opens
  agent_ = testing::spawn({options_.agent_binary, "--config", path("agent.yaml").string()}, out);
  bool up = testing::eventually([&] { return testing::slurp(log).find("agent running") != std::string::npos; },
                                kStartLimit);
  if (!up) throw SoakError("agent run " + std::to_string(run_) + " did not start within 30 s; its output:\n" +
                           testing::slurp(out) + testing::slurp(log));
}

int World::stop_agent(int signal) {
  if (agent_ <= 0) return 0;
  ::kill(agent_, signal);
  int code = testing::wait_exit(agent_);
  agent_ = -1;
  if (code < 0) throw SoakError("agent run " + std::to_string(run_) + " did not exit within 60 s of signal " +
                                std::to_string(signal) + "; its log " + agent_log(run_).string());
  return code;
}

uint64_t World::stored_bytes() const {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(agent_data(), ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec))
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  return total;
}

int64_t World::newest_row_ns(int run) const {
  fs::path newest;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(agent_data() / ("r" + std::to_string(run) + "q0"), ec))
    if (e.path() > newest) newest = e.path();  // a file a day, named by its date
  std::ifstream in(newest, std::ios::binary);
  if (newest.empty() || !in.seekg(0, std::ios::end)) return 0;
  auto size = static_cast<std::streamoff>(in.tellg());
  in.seekg(std::max<std::streamoff>(0, size - 4096));
  std::string tail((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // ..."Time":"2026-12-03T19:25:01.123456789Z"... on the last whole line
  auto at = tail.rfind("\"Time\":\"");
  return at == std::string::npos ? 0 : testing::parse_utc_ns(tail.substr(at + 8, 30));
}

uint64_t World::events_mark() const {
  if (collector_ > 0) throw SoakError("events_mark() while the collector runs");
  net::CollectorStore store(collector_data());
  return store.marks("agent-1")[static_cast<size_t>(schemas::Lane::EVENTS)];
}

std::pair<uint64_t, uint64_t> World::buffered_events() const {
  if (agent_ > 0) throw SoakError("buffered_events() while an agent runs");
  persistence::StoreOptions o;
  o.dir = buffer_dir();
  persistence::BufferStore buffer(o);
  uint64_t last = 0, count = 0;
  for (;;) {
    auto r = buffer.read(schemas::Lane::EVENTS, last, 10000, uint64_t{1} << 30);
    if (r.records.empty()) return {last, count};
    last = r.records.back().seq;
    count += r.records.size();
  }
}

void World::corrupt_buffer(std::mt19937_64& rng, int spots) {
  if (agent_ > 0) throw SoakError("corrupt_buffer() while an agent runs");
  fs::path file = buffer_dir() / "data.mdb";
  std::string bytes = testing::slurp(file);
  const size_t metas = 2 * 4096;
  if (bytes.size() <= metas + 4096) return;  // nothing but the meta pages yet
  // Half the spots anywhere past the meta pages (free pages, branch pages,
  // headers), half on a row's Data (records, live or freed).
  std::vector<size_t> rows;
  for (size_t at = bytes.find(std::string(64, 'x'), metas); at != std::string::npos;
       at = bytes.find(std::string(64, 'x'), at + 4096))
    rows.push_back(at);
  kj::AutoCloseFd fd(::open(file.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.get() < 0) throw SoakError("cannot open " + file.string() + ": " + std::strerror(errno));
  for (int i = 0; i < spots; ++i) {
    std::vector<char> junk(16 + rng() % 496);
    for (auto& c : junk) c = static_cast<char>(rng());
    size_t at = i % 2 && !rows.empty() ? rows[rng() % rows.size()] : metas + rng() % (bytes.size() - metas);
    at = std::min(at, bytes.size() - junk.size());
    if (::pwrite(fd.get(), junk.data(), junk.size(), static_cast<off_t>(at)) != static_cast<ssize_t>(junk.size()))
      throw SoakError("cannot write " + file.string() + ": " + std::strerror(errno));
  }
  ::fsync(fd.get());
}

int World::remove_damaged_copies() {
  int removed = 0;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(buffer_dir().parent_path(), ec))
    if (e.path().filename().string().rfind("buf.damaged-", 0) == 0) removed += fs::remove_all(e.path(), ec) > 0;
  return removed;
}

}  // namespace outpost::soak
