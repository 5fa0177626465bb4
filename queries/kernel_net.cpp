#include "queries/kernel_net.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/capability.h>

#include <spdlog/spdlog.h>

#include <cstring>
#include <fstream>
#include <optional>
#include <stdexcept>

#include "queries/bpf_ring.hpp"
#include "queries/kernel_process.hpp"
#include "queries/linux_util.hpp"
#include "queries/net_decode.hpp"

#include <linux/types.h>  // net_event.h's __u32, as the kernel's headers spell it

#include "queries/bpf/net_event.h"
#include "queries/bpf/outpost_net.skel.h"

namespace outpost::vql {
namespace {

struct SkeletonDeleter {
  void operator()(outpost_net* s) const { outpost_net__destroy(s); }
};
struct LinkDeleter {
  void operator()(bpf_link* l) const { bpf_link__destroy(l); }
};

// Where the root of cgroup v2 is mounted ("" when it is not): the DNS
// programs watch it, so every process's sockets. A cgroup2 mount of a
// subtree (a container's own) is not the root: mountinfo's 4th field says.
std::string cgroup2_root() {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    auto fields = split_ws(std::string_view(line).substr(0, dash));
    auto after = split_ws(std::string_view(line).substr(dash + 3));
    if (fields.size() >= 5 && !after.empty() && after[0] == "cgroup2" && fields[3] == "/")
      return std::string(fields[4]);  // a standard path: no octal escapes to undo
  }
  return "";
}

NetEvent::Kind kind_of(uint32_t kind) {
  switch (kind) {
    case OUTPOST_NET_CONNECT: return NetEvent::Kind::connect;
    case OUTPOST_NET_ACCEPT: return NetEvent::Kind::accept;
    case OUTPOST_NET_CLOSE: return NetEvent::Kind::close;
    case OUTPOST_NET_DNS_QUERY: return NetEvent::Kind::dns_query;
    case OUTPOST_NET_DNS_ANSWER: return NetEvent::Kind::dns_answer;
    default: return NetEvent::Kind::tcp_data;
  }
}

// The kernel refused accept's program, and only it.
struct AcceptRefused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws as fail_libbpf_load; an AcceptRefused when accept's program was
// being loaded and the reason names it (what we say of a step of ours, or
// libbpf's first warning of a refused load).
[[noreturn]] void fail_load(bool with_accept, const std::string& what, int error) {
  try {
    fail_libbpf_load(what, error);
  } catch (const std::runtime_error& e) {
    if (with_accept && std::string(e.what()).find("outpost_accept") != std::string::npos) throw AcceptRefused(e.what());
    throw;
  }
}

class EbpfNetSource final : public NetEventSource {
 public:
  EbpfNetSource(NetGroup group, const NetSourceOptions& options) {
    if (auto why = ebpf_unavailable(); !why.empty()) throw std::runtime_error(why);
    // Programs on cgroups are the network's: the kernel wants CAP_NET_ADMIN to load and attach them.
    if (group == NetGroup::dns && !missing_capabilities({CAP_SYS_ADMIN}).empty() &&
        !missing_capabilities({CAP_NET_ADMIN}).empty())
      throw std::runtime_error("ebpf: DNS events need root or CAP_NET_ADMIN (their programs attach to cgroup v2): "
                               "this process lacks CAP_NET_ADMIN");
    std::string cgroup;
    if (group == NetGroup::dns && (cgroup = cgroup2_root()).empty())
      throw std::runtime_error("ebpf: DNS events need cgroup v2 mounted (none in /proc/self/mounts)");
    if (group != NetGroup::tcp) {
      load(group, options, cgroup, true);
      return;
    }
    // accept's program hooks every system call's exit, which a kernel may
    // not offer (no syscall tracepoints, no BTF for them): connections made
    // and ended are still worth having without it.
    try {
      load(group, options, cgroup, true);
    } catch (const AcceptRefused& e) {
      load(group, options, cgroup, false);
      unavailable_.push_back({NetEvent::Kind::accept, e.what()});
      spdlog::warn("network events from the kernel: no accept events ({}); connects and closes are reported", e.what());
    }
  }
  ~EbpfNetSource() override {
    ring_.reset();
    links_.clear();  // before the programs they hold
  }

  bool read(std::vector<NetEvent>& out, int timeout_ms) override {
    return ring_->read(timeout_ms, [&](const void* data, size_t size, int64_t wall) { add(data, size, wall, out); });
  }
  uint64_t take_lost() override { return ring_->take_lost(); }
  void interrupt() const override { ring_->interrupt(); }
  std::vector<Unavailable> unavailable() const override { return unavailable_; }

 private:
  // Loads and attaches `group`'s programs (with `accept`: its accept
  // program too); throws std::runtime_error naming what the kernel refused
  // (AcceptRefused when only accept's program was), leaving nothing loaded.
  void load(NetGroup group, const NetSourceOptions& options, const std::string& cgroup, bool accept) {
    try {
      load_programs(group, options, cgroup, accept);
    } catch (...) {
      ring_.reset();
      links_.clear();
      skel_.reset();
      throw;
    }
  }
  void load_programs(NetGroup group, const NetSourceOptions& options, const std::string& cgroup, bool accept) {
    start_libbpf_load();
    skel_.reset(outpost_net__open());
    if (!skel_) fail_libbpf_load("opening the network programs", errno);
    // Only this group's programs are loaded.
    bpf_program* mine[2] = {};
    switch (group) {
      case NetGroup::tcp:
        mine[0] = skel_->progs.outpost_tcp_state;
        if (accept) mine[1] = skel_->progs.outpost_accept;
        break;
      case NetGroup::dns: mine[0] = skel_->progs.outpost_dns_egress, mine[1] = skel_->progs.outpost_dns_ingress; break;
      case NetGroup::tcp_data: mine[0] = skel_->progs.outpost_tcp_send; break;
    }
    bpf_program* program = nullptr;
    bpf_object__for_each_program(program, skel_->obj) {
      if (program != mine[0] && program != mine[1]) bpf_program__set_autoload(program, false);
    }
    // (A name the kernel lacks fails here, and libbpf 1.1 then never frees
    // the kernel BTF it read for it: tests name one that exists.)
    if (mine[1] == skel_->progs.outpost_accept && options.accept_tracepoint != "sys_exit")
      if (int err = bpf_program__set_attach_target(mine[1], 0, options.accept_tracepoint.c_str()))
        fail_load(accept, "attaching outpost_accept to the tracepoint " + options.accept_tracepoint, -err);
    // Nor the other groups' maps (the LRU maps are allocated whole at creation).
    bpf_map__set_autocreate(group == NetGroup::dns ? skel_->maps.tcp_owners : skel_->maps.dns_owners, false);
    if (int err = bpf_map__set_max_entries(skel_->maps.events, static_cast<uint32_t>(options.ring_buffer_bytes)))
      fail_libbpf_load("sizing the ring buffer", -err);
    if (int err = outpost_net__load(skel_.get())) fail_load(accept, "loading the network programs", -err);
    kj::AutoCloseFd cgroup_fd;
    if (group == NetGroup::dns) {
      cgroup_fd = kj::AutoCloseFd(::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (cgroup_fd == nullptr) throw std::runtime_error("ebpf: opening the cgroup v2 root " + cgroup + ": " + errno_message(errno));
    }
    for (auto* p : mine) {
      if (!p) continue;
      // A link: attached beside other programs on the same hook, detached with it.
      bpf_link* link = group == NetGroup::dns ? bpf_program__attach_cgroup(p, cgroup_fd.get()) : bpf_program__attach(p);
      if (!link) fail_load(accept, std::string("attaching ") + bpf_program__name(p), errno);
      links_.emplace_back(link);
    }
    ring_ = std::make_unique<BpfRing>(skel_->maps.events, skel_->maps.lost);
  }

  void add(const void* data, size_t size, int64_t wall_offset, std::vector<NetEvent>& out) {
    auto r = static_cast<const outpost_net_event*>(data);
    constexpr size_t header = offsetof(outpost_net_event, data);
    if (size < header || r->data_len > size - header) return;  // cannot happen: the programs write these
    NetEvent e;
    e.kind = kind_of(r->kind);
    e.time_ns = static_cast<uint64_t>(static_cast<int64_t>(r->time_ns) + wall_offset);
    if (r->flags & OUTPOST_NET_PROCESS_KNOWN) {
      e.pid = static_cast<int32_t>(r->pid);
      e.tid = static_cast<int32_t>(r->tid);
      e.uid = r->uid;
      e.comm.assign(r->comm, strnlen(r->comm, sizeof r->comm));
    }
    e.family = r->family;
    e.protocol = r->protocol;
    e.local_ip = ip_text(r->family, r->saddr);
    e.remote_ip = ip_text(r->family, r->daddr);
    e.local_port = r->sport;
    e.remote_port = r->dport;
    e.result = r->result;
    if (r->flags & OUTPOST_NET_CLOSER_KNOWN) e.closer_pid = static_cast<int32_t>(r->closer_pid);
    if (r->start_ns && r->time_ns > r->start_ns) e.duration_ns = r->time_ns - r->start_ns;
    e.socket = r->sock;
    e.message_bytes = r->msg_len;
    e.data.assign(r->data, r->data_len);
    e.cut = r->flags & OUTPOST_NET_DATA_CUT;
    out.push_back(std::move(e));
  }

  std::unique_ptr<outpost_net, SkeletonDeleter> skel_;
  std::vector<std::unique_ptr<bpf_link, LinkDeleter>> links_;
  std::unique_ptr<BpfRing> ring_;
  std::vector<Unavailable> unavailable_;
};

}  // namespace

const char* net_group_name(NetGroup group) {
  switch (group) {
    case NetGroup::tcp: return "tcp";
    case NetGroup::dns: return "dns";
    case NetGroup::tcp_data: return "tcp_data";
  }
  return "?";
}

std::unique_ptr<NetEventSource> open_net_events(NetGroup group, const NetSourceOptions& options) {
  check_ring_buffer_bytes(options.ring_buffer_bytes);
  return std::make_unique<EbpfNetSource>(group, options);
}

}  // namespace outpost::vql
