// The file link on a real FIFO whose reader does not read: its write blocks,
// and it must block only the link's own thread, never a CAF worker.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "actors/buffer_actor.hpp"
#include "actors/file_link.hpp"
#include "tests/actor_test_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost {
namespace {
using namespace outpost::testing;
using namespace std::chrono_literals;

using ping_atom = caf::atom_constant<caf::atom("ping")>;

caf::behavior echo() {
  return {[](ping_atom) { return ping_atom::value; }};
}

TEST(FileLink, ABlockedWriteHoldsNoWorker) {
  TempDir tmp;
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 1);  // the one worker: if the link held it, nothing else would run
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  persistence::StoreOptions o;
  o.dir = tmp.path("buf");
  o.limit_bytes = 64 << 20;
  o.sync = persistence::SyncPolicy::none;
  auto buf = sys.spawn<caf::detached>(buffer, std::make_shared<persistence::BufferStore>(o));

  // A FIFO nobody reads: the link's write stops when the pipe is full.
  auto fifo = tmp.path("out.fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  int capacity = ::fcntl(reader, F_GETPIPE_SZ);
  ASSERT_GT(capacity, 0);
  size_t records = static_cast<size_t>(capacity) / (32 << 10) + 4;  // rendered, more than the pipe holds
  for (size_t i = 0; i < records; ++i) {
    bool stored = false;
    self->request(buf, 60s, append_atom::value, Lane::RESULTS, make_record(32 << 10))
        .receive([&](uint64_t) { stored = true; }, [](caf::error&) {});
    ASSERT_TRUE(stored);
  }

  auto link = spawn_file_link(sys, buf, fifo.string(), true);
  ASSERT_TRUE(eventually([&] {
    int queued = 0;
    return ::ioctl(reader, FIONREAD, &queued) == 0 && queued >= capacity;
  })) << "the link never filled the pipe";

  // The link is now inside write(); another actor must still be served.
  auto other = sys.spawn(echo);
  bool answered = false;
  self->request(other, 10s, ping_atom::value).receive([&](ping_atom) { answered = true; }, [](caf::error&) {});
  EXPECT_TRUE(answered) << "a file link blocked in I/O held the only CAF worker";

  // Drain the pipe until the link, killed, closes its end.
  std::thread drain([reader] {
    ::fcntl(reader, F_SETFL, 0);
    char chunk[64 << 10];
    while (::read(reader, chunk, sizeof chunk) > 0) {
    }
  });
  self->send_exit(link, caf::exit_reason::kill);
  self->send_exit(other, caf::exit_reason::kill);
  self->send_exit(buf, caf::exit_reason::kill);
  drain.join();
  ::close(reader);
}

}  // namespace
}  // namespace outpost
