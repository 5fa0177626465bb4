// Kills outpost-crash-writer with SIGKILL at random moments, over and over on
// one store, and checks after each kill that the store holds exactly what the
// writer was told was stored: nothing acknowledged lost, nothing acked back.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "persistence/buffer_store.hpp"
#include "persistence/record_format.hpp"
#include "tests/temp_dir.hpp"

using namespace outpost::persistence;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

int g_cycles = 20;

// Must match crash_writer.cpp.
std::vector<kj::byte> payload_for(uint64_t id) {
  std::vector<kj::byte> p(1 + id % 700);
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<kj::byte>((id * 31 + i) & 0xff);
  return p;
}

struct Entry {
  size_t lane;
  uint64_t id;
};
using Model = std::map<uint64_t, Entry>;  // seq -> where it is and what it holds

struct Ack {
  bool pending = false;
  size_t lane = 0;
  uint64_t through = 0;
};

// What one writer run claimed on stdout.
struct Claims {
  std::vector<std::string> lines;
  std::string partial;
  bool eof = false;

  void feed(const char* data, size_t n) {
    partial.append(data, n);
    for (size_t nl; (nl = partial.find('\n')) != std::string::npos; partial.erase(0, nl + 1))
      lines.push_back(partial.substr(0, nl));
  }
  bool any_append() const {
    for (auto& l : lines)
      if (l.rfind("A ", 0) == 0) return true;
    return false;
  }
};

// Reads whatever arrives on fd until `until`; false on EOF.
bool pump(int fd, Claims& claims, Clock::time_point until) {
  char buf[65536];
  while (!claims.eof) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    if (left.count() <= 0) return true;
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) claims.eof = true;
    else claims.feed(buf, static_cast<size_t>(n));
  }
  return false;
}

pid_t spawn(const std::string& dir, uint64_t start_id, int seed, int& out_fd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  std::string id = std::to_string(start_id), s = std::to_string(seed);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);  // the dup drops O_CLOEXEC, so only stdout survives exec
    ::execl(OUTPOST_CRASH_WRITER, OUTPOST_CRASH_WRITER, dir.c_str(), id.c_str(), s.c_str(),
            static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  ::close(fds[1]);  // so that EOF arrives once the child is gone
  out_fd = fds[0];
  return pid;
}

}  // namespace

TEST(BufferCrash, KillNineKeepsEveryAcknowledgedRecord) {
  outpost::testing::TempDir root;
  const fs::path dir = root.path("buffer");
  StoreOptions options;
  options.dir = dir;
  options.sync = SyncPolicy::full;
  options.limit_bytes = 4ull << 20;  // as the writer
  options.compact_threshold_bytes = 1ull << 20;

  std::random_device rd;
  const unsigned test_seed = rd();
  std::mt19937 rng(test_seed);
  SCOPED_TRACE("test seed " + std::to_string(test_seed));

  Model model;
  uint64_t next_start = 1;
  uint64_t checked = 0, lines_total = 0, cut_appends = 0, cut_acks = 0;
  auto started = Clock::now();

  for (int cycle = 0; cycle < g_cycles; ++cycle) {
    SCOPED_TRACE("cycle " + std::to_string(cycle));
    int fd = -1;
    pid_t pid = spawn(dir.string(), next_start, cycle, fd);
    ASSERT_GT(pid, 0) << std::strerror(errno);

    Claims claims;
    auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!claims.any_append() && !claims.eof && Clock::now() < deadline)
      pump(fd, claims, std::min(deadline, Clock::now() + std::chrono::milliseconds(50)));
    bool had_append = claims.any_append();
    if (had_append)
      pump(fd, claims, Clock::now() + std::chrono::milliseconds(
                                          std::uniform_int_distribution<int>(20, 300)(rng)));
    ::kill(pid, SIGKILL);
    pump(fd, claims, Clock::time_point::max());
    ::close(fd);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the writer ended on its own (" << (WIFEXITED(status) ? "exit " : "signal ")
        << (WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status)) << "); see its stderr";
    ASSERT_TRUE(had_append) << "no append line within 10 s";
    lines_total += claims.lines.size();

    // Replay the claims onto the model. `maybe` holds the one ack that may
    // have been in flight at the kill: its records may or may not be gone.
    Ack maybe;
    uint64_t max_claimed_seq = 0, writer_next_id = next_start;
    for (auto& line : claims.lines) {
      std::istringstream in(line);
      char kind = 0;
      size_t lane = 0;
      uint64_t a = 0, b = 0, first_id = 0;
      in >> kind >> lane >> a;
      ASSERT_LT(lane, kLaneCount) << line;
      if (kind == 'A') {
        ASSERT_TRUE(in >> b >> first_id) << line;
        ASSERT_LE(a, b) << line;
        ASSERT_EQ(first_id, writer_next_id) << line;
        for (uint64_t seq = a; seq <= b; ++seq) {
          ASSERT_EQ(model.count(seq), 0u) << "seq handed out twice: " << line;
          model[seq] = {lane, first_id + (seq - a)};
        }
        max_claimed_seq = std::max(max_claimed_seq, b);
        writer_next_id = first_id + (b - a + 1);
      } else if (kind == 'R') {
        maybe = Ack{true, lane, a};
      } else if (kind == 'K') {
        ASSERT_TRUE(maybe.pending && maybe.lane == lane && maybe.through == a) << line;
        maybe.pending = false;
        for (auto it = model.begin(); it != model.end();)
          it = it->first <= a && it->second.lane == lane ? model.erase(it) : std::next(it);
      } else {
        FAIL() << "unparsable line: " << line;
      }
    }

    BufferStore store(options);
    EXPECT_FALSE(store.open_report().set_aside_to) << store.open_report().reason;
    EXPECT_FALSE(store.open_report().meta_rebuilt) << store.open_report().reason;
    // After a kill -9 the file is checked in a child, and found whole.
    EXPECT_TRUE(store.open_report().checked);
    EXPECT_EQ(store.open_report().lost, 0u);

    Model present;
    uint64_t live_bytes = 0, quarantined = 0;
    for (size_t lane = 0; lane < kLaneCount; ++lane) {
      uint64_t after = 0;
      for (;;) {
        ReadResult r = store.read(static_cast<Lane>(lane), after, 1000, 16u << 20);
        quarantined += r.quarantined;
        if (r.records.empty()) break;
        for (auto& rec : r.records) {
          ASSERT_GT(rec.seq, after) << "lane " << lane << " out of order";
          after = rec.seq;
          ASSERT_TRUE(present.emplace(rec.seq, Entry{lane, rec.query_id}).second)
              << "seq " << rec.seq << " in two lanes";
          // Every record, expected or not, must be one the writer built whole.
          auto want = payload_for(rec.query_id);
          auto got = rec.payload();
          ASSERT_EQ(rec.created_ns, static_cast<int64_t>(rec.query_id * 3)) << "seq " << rec.seq;
          ASSERT_TRUE(got.size() == want.size() &&
                      std::equal(want.begin(), want.end(), got.begin()))
              << "payload of seq " << rec.seq << " (id " << rec.query_id << ") damaged";
          live_bytes += record_format::accounted_bytes(got.size());
        }
      }
    }
    EXPECT_EQ(quarantined, 0u);

    for (auto& [seq, want] : model) {
      auto it = present.find(seq);
      bool acked_maybe = maybe.pending && want.lane == maybe.lane && seq <= maybe.through;
      if (it == present.end()) {
        ASSERT_TRUE(acked_maybe) << "acknowledged seq " << seq << " (lane " << want.lane
                                 << ", id " << want.id << ") lost";
        continue;
      }
      ASSERT_EQ(it->second.lane, want.lane) << "seq " << seq << " moved lanes";
      ASSERT_EQ(it->second.id, want.id) << "seq " << seq << " holds another record";
    }
    // Anything else must be the one append cut off between commit and its A
    // line: one lane, past every claimed seq, ids continuing the writer's.
    uint64_t inflight = 0;
    for (auto& [seq, got] : present) {
      if (model.count(seq)) continue;
      ASSERT_GT(seq, max_claimed_seq) << "seq " << seq << " (lane " << got.lane << ", id "
                                      << got.id << ") should not be there (acked or unknown)";
      ASSERT_EQ(got.id, writer_next_id + inflight) << "stray seq " << seq;
      ASSERT_EQ(got.lane, present.rbegin()->second.lane) << "stray seq " << seq;
      ++inflight;
    }
    ASSERT_LE(inflight, 200u);
    cut_appends += inflight > 0;
    cut_acks += maybe.pending;

    Verification v = store.verify();
    EXPECT_EQ(v.corrupt, 0u);
    EXPECT_TRUE(v.meta_matches);
    StoreStats stats = store.stats();
    EXPECT_EQ(stats.live_bytes, live_bytes);
    EXPECT_EQ(stats.records, present.size());
    EXPECT_EQ(stats.quarantined.records, 0u);
    if (::testing::Test::HasFailure()) return;

    checked += present.size();
    model = std::move(present);  // the next cycle starts from what is really there
    next_start = writer_next_id + 200;  // past the cut-off batch's ids, stored or not
  }  // the store closes here, before the next writer opens the directory

  double secs = std::chrono::duration<double>(Clock::now() - started).count();
  // The cut-off counts show how often a kill landed inside an append or ack.
  std::printf("buffer crash: %d cycles, %llu records checked, %llu writer lines, "
              "%llu appends and %llu acks cut off by the kill, %.1f s\n",
              g_cycles, static_cast<unsigned long long>(checked),
              static_cast<unsigned long long>(lines_total),
              static_cast<unsigned long long>(cut_appends),
              static_cast<unsigned long long>(cut_acks), secs);
}

int main(int argc, char** argv) {
  // Take --cycles N out of argv before GoogleTest sees it.
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--cycles") == 0 && i + 1 < argc)
      g_cycles = std::atoi(argv[++i]);
    else if (std::strncmp(argv[i], "--cycles=", 9) == 0)
      g_cycles = std::atoi(argv[i] + 9);
    else
      argv[out++] = argv[i];
  }
  argc = out;
  argv[argc] = nullptr;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
