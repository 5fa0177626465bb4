// The probe's recipe for a damaged buffer: build a buffer, stop it cleanly,
// damage data.mdb the way disks and people do, then start "the agent" twice.
// Each start is a real child process that opens the store as the agent does
// and delivers (reads, then acks) everything it can. Both starts must end
// normally, in bounded time; what was delivered plus what was reported lost
// must be every record; the damaged file must be set aside.
//
// kRows is 20,000 so the default suite stays quick; the probe used 100,000
// (OUTPOST_DAMAGE_ROWS=100000 runs that).

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>

#include "persistence/buffer_store.hpp"
#include "tests/store_test_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::persistence {
namespace {
namespace fs = std::filesystem;
using outpost::testing::TempDir;
using namespace outpost::persistence::testing;

constexpr size_t kPage = 4096;
constexpr uint16_t kBranch = 0x01, kLeaf = 0x02;

uint64_t rows() {
  const char* n = std::getenv("OUTPOST_DAMAGE_ROWS");
  return n ? std::stoull(n) : 20000;
}

// What one start of "the agent" saw: "exit N" or "signal N" or "timeout",
// then its report line.
struct Start {
  std::string end;
  uint64_t delivered = 0, salvaged = 0, lost = 0, remaining = 0;
  bool lost_unknown = false, set_aside = false, checked = false;
  std::string text;
};

// Reads every lane to its end and acks what it read, as the link does.
uint64_t deliver_all(BufferStore& store) {
  uint64_t delivered = 0;
  for (size_t i = 0; i < kLaneCount; ++i) {
    uint64_t after = 0;
    for (;;) {
      auto got = store.read(static_cast<Lane>(i), after, 1000, 4 << 20);
      if (got.records.empty()) break;
      delivered += got.records.size();
      after = got.records.back().seq;
    }
    if (after) store.ack(static_cast<Lane>(i), after);
  }
  return delivered;
}

// Opens the store in a child process as the agent does, delivers everything
// and stops cleanly; `while_open` runs between the open and the reads.
Start start_agent(const StoreOptions& o, const std::function<void()>& while_open = {}) {
  int fds[2];
  if (pipe(fds) != 0) {
    Start failed;
    failed.end = "pipe failed";
    return failed;
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::ostringstream out;
    try {
      BufferStore store(o);
      if (while_open) while_open();
      auto& r = store.open_report();
      uint64_t delivered = deliver_all(store);
      auto damage = store.stats().damage;
      if (while_open) out << damage.salvages << ' ' << damage.lost << ' ';
      out << delivered << ' ' << r.salvaged << ' ' << r.lost << ' ' << r.lost_unknown << ' '
          << bool(r.set_aside_to) << ' ' << r.checked << ' ' << store.stats().records << ' '
          << r.reason;
    } catch (const std::exception& e) {
      out << "exception " << e.what();
    }
    std::string s = out.str();
    (void)!write(fds[1], s.data(), s.size());
    _exit(0);
  }
  close(fds[1]);
  Start st;
  std::string text;
  char buf[4096];
  bool timed_out = false;
  for (;;) {
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, 300000) == 0) {  // a hang is a failure, not a stuck test
      kill(pid, SIGKILL);
      timed_out = true;
      break;
    }
    ssize_t n = read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    text.append(buf, n);
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  st.end = timed_out ? "timeout"
           : WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                 : "exit " + std::to_string(WEXITSTATUS(status));
  st.text = text;
  std::istringstream in(text);
  in >> st.delivered >> st.salvaged >> st.lost >> st.lost_unknown >> st.set_aside >> st.checked >>
      st.remaining;
  return st;
}

// A buffer of n rows (events and results interleaved), stopped cleanly.
void build(const StoreOptions& o, uint64_t n) {
  BufferStore store(o);
  for (uint64_t done = 0; done < n;) {
    size_t k = std::min<uint64_t>(1000, n - done);
    Batch b(k, 100, 1 + done / 1000 % 3, "row" + std::to_string(done) + "-");
    ASSERT_TRUE(store.append(done / 1000 % 2 ? Lane::RESULTS : Lane::EVENTS, b.ptr()).ok());
    done += k;
  }
}

uint16_t flags_of(const std::string& data, size_t page) {
  uint16_t f;
  std::memcpy(&f, &data[page * kPage + 10], 2);
  return f;
}

// The page numbers of every page with exactly these flags, in file order.
std::vector<size_t> pages_with(const std::string& data, uint16_t flags) {
  std::vector<size_t> found;
  for (size_t p = 2; (p + 1) * kPage <= data.size(); ++p) {
    uint64_t pgno;
    std::memcpy(&pgno, &data[p * kPage], 8);
    if (pgno == p && flags_of(data, p) == flags) found.push_back(p);
  }
  return found;
}

class Damage : public ::testing::Test {
 protected:
  void SetUp() override {
    o_ = options_for(tmp_.path("buf"));
    n_ = rows();
    build(o_, n_);
    file_ = tmp_.path("buf") / "data.mdb";
    data_ = slurp(file_);
  }

  // Starts twice and checks the promise; returns the first start.
  Start expect_survives(bool set_aside = true) {
    Start first = start_agent(o_);
    EXPECT_EQ(first.end, "exit 0") << first.text;
    EXPECT_EQ(first.text.rfind("exception", 0), std::string::npos) << first.text;
    EXPECT_TRUE(first.checked) << first.text;
    EXPECT_EQ(first.set_aside, set_aside) << first.text;
    if (!first.lost_unknown) {
      EXPECT_EQ(first.delivered + first.lost, n_) << first.text;
    }
    EXPECT_EQ(first.remaining, 0u) << "acked but still there: " << first.text;
    if (set_aside) {
      bool kept = false;
      for (auto& e : fs::directory_iterator(tmp_.root()))
        if (e.path().filename().string().rfind("buf.", 0) == 0 && fs::exists(e.path() / "data.mdb"))
          kept = true;
      EXPECT_TRUE(kept) << "the damaged file was not kept";
    }
    Start second = start_agent(o_);
    EXPECT_EQ(second.end, "exit 0") << second.text;
    EXPECT_EQ(second.delivered, 0u) << "delivered again: " << second.text;
    EXPECT_FALSE(second.set_aside) << second.text;
    EXPECT_FALSE(second.checked) << "a clean close was checked again: " << second.text;
    return first;
  }

  TempDir tmp_;
  StoreOptions o_;
  uint64_t n_ = 0;
  fs::path file_;
  std::string data_;
};

TEST_F(Damage, Zeroed64KiBRange) {
  size_t at = data_.size() / 2 / kPage * kPage;
  std::fill_n(data_.begin() + at, 65536, '\0');
  spit(file_, data_);
  Start s = expect_survives();
  EXPECT_GT(s.delivered, n_ / 4) << s.text;
  EXPECT_GT(s.lost, 0u) << s.text;
}

TEST_F(Damage, LeafPageHeader) {
  auto leaves = pages_with(data_, kLeaf);
  ASSERT_GT(leaves.size(), 10u);
  size_t p = leaves[leaves.size() / 2];
  uint16_t overflow = 0x04;  // an overflow page: its "page count" is garbage
  std::memcpy(&data_[p * kPage + 10], &overflow, 2);
  std::memset(&data_[p * kPage + 12], 0x7f, 4);
  spit(file_, data_);
  Start s = expect_survives();
  EXPECT_GT(s.delivered, n_ / 2) << s.text;
  EXPECT_GT(s.lost, 0u) << s.text;
}

TEST_F(Damage, LeafPageNumber) {
  auto leaves = pages_with(data_, kLeaf);
  ASSERT_GT(leaves.size(), 10u);
  size_t p = leaves[leaves.size() / 3];
  uint64_t wrong = 3;
  std::memcpy(&data_[p * kPage], &wrong, 8);
  spit(file_, data_);
  Start s = expect_survives();
  EXPECT_GT(s.delivered, n_ / 2) << s.text;
}

TEST_F(Damage, BadChildPageInABranchPage) {
  auto branches = pages_with(data_, kBranch);
  ASSERT_FALSE(branches.empty());
  size_t p = branches.front();
  uint16_t lower;
  std::memcpy(&lower, &data_[p * kPage + 12], 2);
  size_t keys = (lower - 16) / 2;
  ASSERT_GE(keys, 3u);
  uint16_t node;
  std::memcpy(&node, &data_[p * kPage + 16 + 2 * (keys / 2)], 2);
  std::memset(&data_[p * kPage + node], 0xff, 4);  // the child's page number, low 32 bits
  spit(file_, data_);
  Start s = expect_survives();
  EXPECT_GT(s.delivered, n_ / 4) << s.text;
  EXPECT_GT(s.lost, 0u) << s.text;
}

TEST_F(Damage, ThousandRandomBytesInTheMiddle) {
  std::mt19937 rng(12);
  size_t at = data_.size() / 2;
  for (size_t i = 0; i < 1000; ++i) data_[at + i] = static_cast<char>(rng());
  spit(file_, data_);
  Start s = expect_survives();
  EXPECT_GT(s.delivered, n_ / 2) << s.text;
}

TEST_F(Damage, TruncatedToZeroIsReportedAsLoss) {
  fs::resize_file(file_, 0);
  Start first = start_agent(o_);
  EXPECT_EQ(first.end, "exit 0") << first.text;
  EXPECT_EQ(first.delivered, 0u) << first.text;
  EXPECT_EQ(first.lost, n_) << "the loss was not reported: " << first.text;
  EXPECT_NE(first.text.find("empty"), std::string::npos) << first.text;
  Start second = start_agent(o_);
  EXPECT_EQ(second.end, "exit 0") << second.text;
  EXPECT_EQ(second.lost, 0u) << "one loss reported twice: " << second.text;
}

// Damage that appears while the store is open (a branch page's child turns
// into a page that does not exist) is salvaged on the spot by the read that
// meets it: the lane moves on instead of failing every read.
TEST_F(Damage, MetWhileOpenIsSalvagedAndTheLaneMovesOn) {
  auto branches = pages_with(data_, kBranch);
  ASSERT_FALSE(branches.empty());
  size_t p = branches.front();
  uint16_t lower, node;
  std::memcpy(&lower, &data_[p * kPage + 12], 2);
  std::memcpy(&node, &data_[p * kPage + 16 + 2 * ((lower - 16) / 2 / 2)], 2);
  Start s = start_agent(o_, [&] {
    std::fstream f(file_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(p * kPage + node);
    f.write("\xff\xff\xff\xff", 4);
  });
  std::istringstream in(s.text);
  uint64_t salvages = 0, lost = 0, delivered = 0;
  in >> salvages >> lost >> delivered;
  EXPECT_EQ(s.end, "exit 0") << s.text;
  EXPECT_EQ(salvages, 1u) << s.text;
  EXPECT_GT(lost, 0u) << s.text;
  EXPECT_EQ(delivered + lost, n_) << s.text;
}

// A store whose owner dies at every start is rebuilt by the third start,
// even when its check finds nothing: a crash loop ends without loss.
TEST_F(Damage, CrashLoopEndsInARebuild) {
  for (int i = 0; i < 2; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      BufferStore store(o_);
      std::abort();
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
  }
  Start s = start_agent(o_);
  EXPECT_EQ(s.end, "exit 0") << s.text;
  EXPECT_TRUE(s.set_aside) << s.text;
  EXPECT_EQ(s.delivered, n_) << s.text;
  EXPECT_EQ(s.lost, 0u) << s.text;
}

}  // namespace
}  // namespace outpost::persistence
