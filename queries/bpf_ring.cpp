#include "queries/bpf_ring.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstdarg>
#include <cstdio>
#include <stdexcept>
#include <vector>

#include "queries/kernel_process.hpp"

namespace outpost::vql {
namespace {

// Since the last start_libbpf_load on this thread: libbpf prints on the
// thread that loads, and sensors load on threads of their own.
thread_local std::string libbpf_first_warning;

int libbpf_print(enum libbpf_print_level level, const char* format, va_list args) {
  char text[1024];
  int n = std::vsnprintf(text, sizeof text, format, args);
  std::string line(text, n > 0 ? std::min<size_t>(static_cast<size_t>(n), sizeof text - 1) : 0);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  if (line.rfind("libbpf: ", 0) == 0) line.erase(0, 8);
  spdlog::debug("libbpf: {}", line);
  // The first warning of a failed load names its cause; the last ones only that it failed.
  if (level == LIBBPF_WARN && libbpf_first_warning.empty()) libbpf_first_warning = line;
  return 0;
}

}  // namespace

void start_libbpf_load() {
  libbpf_set_print(libbpf_print);
  libbpf_first_warning.clear();
}

void fail_libbpf_load(const std::string& what, int error) {
  std::string warning = std::exchange(libbpf_first_warning, {});
  throw std::runtime_error("ebpf: " + what + ": " + errno_message(error) +
                           (warning.empty() ? "" : " (libbpf: " + warning + ")"));
}

void check_ring_buffer_bytes(uint64_t bytes) {
  if (bytes < 4096 || (bytes & (bytes - 1)) != 0 || bytes > (uint64_t{1} << 30))
    throw std::runtime_error("ebpf: the ring buffer's size must be a power of two from 4 KiB to 1 GiB, not " +
                             std::to_string(bytes));
}

void BpfRing::RingDeleter::operator()(ring_buffer* r) const { ring_buffer__free(r); }

BpfRing::BpfRing(const bpf_map* events, const bpf_map* lost) : lost_(lost) {
  ring_.reset(ring_buffer__new(bpf_map__fd(events), &BpfRing::on_record, this, nullptr));
  if (!ring_) fail_libbpf_load("opening the ring buffer", errno);
  wake_ = kj::AutoCloseFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (wake_ == nullptr) fail_libbpf_load("creating an eventfd", errno);
  cpus_ = libbpf_num_possible_cpus();
  if (cpus_ <= 0) fail_libbpf_load("counting the CPUs", -cpus_);
}

BpfRing::~BpfRing() = default;

int BpfRing::on_record(void* self, void* data, size_t size) {
  auto ring = static_cast<BpfRing*>(self);
  if (!ring->wall_offset_) ring->wall_offset_ = boot_to_wall_ns();
  (*ring->handler_)(data, size, *ring->wall_offset_);
  return 0;
}

bool BpfRing::read(int timeout_ms, const Handler& on_record) {
  pollfd fds[2] = {{ring_buffer__epoll_fd(ring_.get()), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
  int n = ::poll(fds, 2, timeout_ms);
  if (n < 0 && errno != EINTR) throw std::runtime_error("ebpf: poll: " + errno_message(errno));
  if (n > 0 && (fds[1].revents & POLLIN)) {
    uint64_t count;
    [[maybe_unused]] auto r = ::read(wake_.get(), &count, sizeof count);
    return false;
  }
  handler_ = &on_record;
  wall_offset_.reset();
  int consumed = ring_buffer__consume(ring_.get());
  handler_ = nullptr;
  if (consumed < 0) throw std::runtime_error("ebpf: reading the ring buffer: " + errno_message(-consumed));
  return true;
}

uint64_t BpfRing::take_lost() {
  std::vector<uint64_t> per_cpu(static_cast<size_t>(cpus_));
  uint32_t zero = 0;
  if (bpf_map__lookup_elem(lost_, &zero, sizeof zero, per_cpu.data(), per_cpu.size() * sizeof(uint64_t), 0) != 0)
    return 0;
  uint64_t total = 0;
  for (auto n : per_cpu) total += n;
  return total - std::exchange(lost_seen_, total);
}

void BpfRing::interrupt() const {
  uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(wake_.get(), &one, sizeof one);
}

}  // namespace outpost::vql
