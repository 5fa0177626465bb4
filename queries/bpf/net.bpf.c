/* Network events from the kernel, into one ring buffer (a record it has no
 * room for is counted in `lost`, per CPU):
 *  - TCP connect, close: raw tracepoint inet_sock_set_state;
 *  - TCP accept: BTF tracepoint sys_exit, for accept/accept4 only;
 *  - TCP first bytes sent (HTTP request lines): raw tracepoint tcp_sendmsg_locked;
 *  - DNS over UDP: cgroup_skb egress/ingress on the cgroup v2 root.
 * Kernels built without kprobes and with fentry refused (as here) leave
 * tracepoints and cgroup hooks: no program here needs kprobes or trampolines. */
#include "net_kernel_types.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "net_event.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

enum {
  TCP_ESTABLISHED = 1,
  TCP_SYN_SENT = 2,
  TCP_SYN_RECV = 3,
  TCP_FIN_WAIT1 = 4,
  TCP_FIN_WAIT2 = 5,
  TCP_TIME_WAIT = 6,
  TCP_CLOSE = 7,
  TCP_CLOSE_WAIT = 8,
  TCP_LAST_ACK = 9,
  TCP_LISTEN = 10,
  TCP_CLOSING = 11,
};

OUTPOST_RING_MAPS();

/* The process a socket belongs to: who connected it, accepted it, or sent
 * its first DNS query; and who closed it. TCP keyed by the struct sock's
 * address (entries go at TCP_CLOSE where the tcp programs run; else, as
 * for the tcp_data programs alone, the LRU evicts them), DNS by the socket
 * cookie (LRU). */
struct owner {
  __u32 pid, tid, uid;
  __u32 closer_pid;
  __u64 start_ns;
  __u32 flags;     /* OWNER_* */
  __u32 pad;
  char comm[OUTPOST_COMM_LEN];
};
#define OWNER_KNOWN 1u
#define OWNER_CLOSER 2u
#define OWNER_SENT 4u /* its first TCP bytes were reported */

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, __u64);
  __type(value, struct owner);
} tcp_owners SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u64);
  __type(value, struct owner);
} dns_owners SEC(".maps");

#define DATA_SIZE (sizeof(((struct outpost_net_event *)0)->data))
#define HEADER_SIZE (sizeof(struct outpost_net_event) - DATA_SIZE)

/* Records are written in the ring buffer itself: these programs run in
 * process context and in softirq, and one may interrupt another on a CPU, so
 * no per-CPU record can be shared between them. `size` is a constant:
 * HEADER_SIZE for events without data, else the whole record. Every path
 * after start() submits or discards (the verifier insists). */
static __always_inline void count_lost(void) {
  __u32 zero = 0;
  __u64 *count = bpf_map_lookup_elem(&lost, &zero);
  if (count) __sync_fetch_and_add(count, 1);
}

static __always_inline struct outpost_net_event *start(__u32 kind, __u64 size) {
  struct outpost_net_event *e = bpf_ringbuf_reserve(&events, size, 0);
  if (!e) {
    count_lost();
    return 0;
  }
  __builtin_memset(e, 0, HEADER_SIZE);
  e->kind = kind;
  e->time_ns = bpf_ktime_get_boot_ns();
  return e;
}

static __always_inline void submit(struct outpost_net_event *e) { bpf_ringbuf_submit(e, 0); }
static __always_inline void discard(struct outpost_net_event *e) { bpf_ringbuf_discard(e, 0); }

static __always_inline void set_current(struct outpost_net_event *e) {
  __u64 id = bpf_get_current_pid_tgid();
  e->pid = id >> 32;
  e->tid = (__u32)id;
  e->uid = (__u32)bpf_get_current_uid_gid();
  bpf_get_current_comm(&e->comm, sizeof(e->comm));
  e->flags |= OUTPOST_NET_PROCESS_KNOWN;
}

static __always_inline void fill_owner(struct owner *o) {
  __u64 id = bpf_get_current_pid_tgid();
  o->pid = id >> 32;
  o->tid = (__u32)id;
  o->uid = (__u32)bpf_get_current_uid_gid();
  bpf_get_current_comm(&o->comm, sizeof(o->comm));
  o->flags |= OWNER_KNOWN;
}

static __always_inline void set_owner(struct outpost_net_event *e, const struct owner *o) {
  if (!o || !(o->flags & OWNER_KNOWN)) return;
  e->pid = o->pid;
  e->tid = o->tid;
  e->uid = o->uid;
  __builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
  e->flags |= OUTPOST_NET_PROCESS_KNOWN | OUTPOST_NET_OWNER_FROM_MAP;
}

/* ---- TCP: the socket's 5-tuple ---- */

static __always_inline __u16 sk_protocol(struct sock *sk) {
  return (__u16)BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
}

/* Returns 0 for a socket neither IPv4 nor IPv6. */
static __always_inline int set_tuple(struct outpost_net_event *e, struct sock *sk) {
  __u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
  if (family == AF_INET) {
    __be32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr), d = BPF_CORE_READ(sk, __sk_common.skc_daddr);
    __builtin_memcpy(e->saddr, &s, 4);
    __builtin_memcpy(e->daddr, &d, 4);
  } else if (family == AF_INET6) {
    BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
    BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
  } else {
    return 0;
  }
  e->family = family;
  e->protocol = IPPROTO_TCP;
  /* inet_sport rather than skc_num: at TCP_CLOSE the port is already put
   * back and skc_num zeroed. */
  e->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
  e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
  e->sock = (__u64)sk;
  return 1;
}

/* raw_tp/inet_sock_set_state(sk, oldstate, newstate): called in whatever
 * context changes the state: CLOSE->SYN_SENT in connect() (but before the
 * source port is chosen), SYN_SENT->ESTABLISHED on the SYN-ACK (usually
 * softirq), ->FIN_WAIT1/LAST_ACK in close()/shutdown(), ->CLOSE anywhere. So
 * the process is taken where the context is known and kept by socket. */
SEC("raw_tp/inet_sock_set_state")
int outpost_tcp_state(struct bpf_raw_tracepoint_args *ctx) {
  struct sock *sk = (struct sock *)ctx->args[0];
  int oldstate = (int)ctx->args[1];
  int newstate = (int)ctx->args[2];
  if (sk_protocol(sk) != IPPROTO_TCP) return 0; /* also SCTP, MPTCP */
  __u64 key = (__u64)sk;

  if (newstate == TCP_SYN_SENT) { /* connect(), in its caller's context */
    struct owner o = {};
    fill_owner(&o);
    o.start_ns = bpf_ktime_get_boot_ns();
    bpf_map_update_elem(&tcp_owners, &key, &o, BPF_ANY);
    return 0;
  }
  if ((oldstate == TCP_ESTABLISHED && newstate == TCP_FIN_WAIT1) ||
      (oldstate == TCP_CLOSE_WAIT && newstate == TCP_LAST_ACK)) {
    /* Only tcp_close() and tcp_shutdown() make these: the closer's context. */
    struct owner *o = bpf_map_lookup_elem(&tcp_owners, &key);
    if (!o) {
      struct owner fresh = {};
      bpf_map_update_elem(&tcp_owners, &key, &fresh, BPF_NOEXIST);
      o = bpf_map_lookup_elem(&tcp_owners, &key);
      if (!o) return 0;
    }
    o->closer_pid = bpf_get_current_pid_tgid() >> 32;
    o->flags |= OWNER_CLOSER;
    return 0;
  }
  if (oldstate == TCP_SYN_SENT && (newstate == TCP_ESTABLISHED || newstate == TCP_CLOSE)) {
    struct outpost_net_event *e = start(OUTPOST_NET_CONNECT, HEADER_SIZE);
    if (!e) return 0;
    if (!set_tuple(e, sk)) {
      discard(e);
      return 0;
    }
    struct owner *o = bpf_map_lookup_elem(&tcp_owners, &key);
    set_owner(e, o);
    if (o) e->start_ns = o->start_ns;
    e->result = newstate == TCP_ESTABLISHED ? 0 : -TCP_SYN_SENT;
    submit(e);
    if (newstate == TCP_CLOSE) bpf_map_delete_elem(&tcp_owners, &key);
    return 0;
  }
  if (newstate == TCP_CLOSE && oldstate != TCP_LISTEN && oldstate != TCP_CLOSE) {
    struct outpost_net_event *e = start(OUTPOST_NET_CLOSE, HEADER_SIZE);
    if (!e) return 0;
    if (!set_tuple(e, sk)) {
      discard(e);
      return 0;
    }
    struct owner *o = bpf_map_lookup_elem(&tcp_owners, &key);
    set_owner(e, o);
    if (o && (o->flags & OWNER_CLOSER)) {
      e->closer_pid = o->closer_pid;
      e->flags |= OUTPOST_NET_CLOSER_KNOWN;
    }
    e->result = oldstate; /* the state it was closed from */
    submit(e);
    bpf_map_delete_elem(&tcp_owners, &key);
  }
  return 0;
}

/* Whether the system call ending is a 32-bit process's accept: its numbers
 * are another table's, so without this an accept made by a 32-bit binary
 * would go unseen. (arm64's 32-bit tasks are not covered.) */
static __always_inline int compat_accept(struct pt_regs *regs, long nr) {
#if defined(__TARGET_ARCH_x86)
  if (nr != OUTPOST_NR32_ACCEPT4 && nr != OUTPOST_NR32_SOCKETCALL) return 0;
  struct task_struct *task = (struct task_struct *)bpf_get_current_task();
  if (!(BPF_CORE_READ(task, thread_info.status) & OUTPOST_TS_COMPAT)) return 0;
  if (nr == OUTPOST_NR32_ACCEPT4) return 1;
  unsigned long call = regs->bx;
  return call == OUTPOST_SYS_ACCEPT || call == OUTPOST_SYS_ACCEPT4;
#else
  return 0;
#endif
}

/* tp_btf/sys_exit(regs, ret): accept() and accept4() returning a new fd,
 * in the accepting process, 64- or 32-bit. No tracepoint of the accept path
 * has the new socket in the accepter's context, and kretprobe/fexit on
 * inet_csk_accept are not to be had here. Costs a (short) program run at
 * every syscall exit. */
SEC("tp_btf/sys_exit")
int BPF_PROG(outpost_accept, struct pt_regs *regs, long ret) {
  if (ret < 0) return 0;
  /* tp_btf: regs is a typed kernel pointer, read without a helper call
   * (this runs at every syscall's exit). */
  long nr = OUTPOST_SYSCALL_NR_DIRECT(regs);
  if (nr != OUTPOST_NR_ACCEPT && nr != OUTPOST_NR_ACCEPT4 && !compat_accept(regs, nr)) return 0;
  struct task_struct *task = (struct task_struct *)bpf_get_current_task();
  struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
  if ((unsigned long)ret >= BPF_CORE_READ(fdt, max_fds)) return 0;
  struct file **fds = BPF_CORE_READ(fdt, fd);
  struct file *file = 0;
  bpf_probe_read_kernel(&file, sizeof(file), &fds[ret]);
  if (!file) return 0;
  struct socket *sock = BPF_CORE_READ(file, private_data); /* accept's fd is a socket's */
  struct sock *sk = BPF_CORE_READ(sock, sk);
  if (!sk || sk_protocol(sk) != IPPROTO_TCP) return 0;
  struct outpost_net_event *e = start(OUTPOST_NET_ACCEPT, HEADER_SIZE);
  if (!e) return 0;
  if (!set_tuple(e, sk)) {
    discard(e);
    return 0;
  }
  set_current(e);
  __u64 now = e->time_ns;
  submit(e);
  __u64 key = (__u64)sk;
  struct owner o = {};
  fill_owner(&o);
  o.start_ns = now;
  struct owner *old = bpf_map_lookup_elem(&tcp_owners, &key);
  if (old && (old->flags & OWNER_CLOSER)) { /* closed by the peer before the accept: keep the closer */
    o.closer_pid = old->closer_pid;
    o.flags |= OWNER_CLOSER;
  }
  bpf_map_update_elem(&tcp_owners, &key, &o, BPF_ANY);
  return 0;
}

/* ---- TCP: the first bytes of a send ---- */

static __always_inline int http_method(const char *p) {
  /* The first four bytes of a request line's method, little-endian. */
  __u32 w = *(const __u32 *)p;
  return w == 0x20544547 /* "GET " */ || w == 0x54534f50 /* "POST" */ || w == 0x20545550 /* "PUT " */ ||
         w == 0x44414548 /* "HEAD" */ || w == 0x454c4544 /* "DELE" */ || w == 0x4954504f /* "OPTI" */ ||
         w == 0x43544150 /* "PATC" */ || w == 0x4e4e4f43 /* "CONN" */;
}

/* The user memory the iterator's next bytes come from, and how many are in
 * that segment: ITER_UBUF (6.0+, what write()/send() of one buffer make) or
 * the current iovec of ITER_IOVEC; NULL for kernel memory (kvec, bvec: e.g.
 * sendfile, splice). */
static __always_inline const void *iter_user_bytes(struct iov_iter *it, unsigned long *len) {
  __u8 type;
  if (bpf_core_field_exists(it->iter_type)) {
    type = BPF_CORE_READ(it, iter_type);
  } else {
    struct iov_iter___pre514 *old = (void *)it;
    type = BPF_CORE_READ(old, type) & ~1u; /* bit 0: the direction (WRITE) */
  }
  unsigned long offset = BPF_CORE_READ(it, iov_offset);
  unsigned long count = BPF_CORE_READ(it, count);
  if (bpf_core_enum_value_exists(enum iter_type, ITER_UBUF) && type == bpf_core_enum_value(enum iter_type, ITER_UBUF)) {
    *len = count;
    return (const char *)BPF_CORE_READ(it, ubuf) + offset;
  }
  if (type != bpf_core_enum_value(enum iter_type, ITER_IOVEC)) return 0;
  const struct iovec *iov;
  if (bpf_core_field_exists(it->__iov)) {
    iov = BPF_CORE_READ(it, __iov);
  } else {
    struct iov_iter___pre64 *old = (void *)it;
    iov = BPF_CORE_READ(old, iov);
  }
  unsigned long seg = BPF_CORE_READ(iov, iov_len);
  *len = seg > offset ? seg - offset : 0;
  if (*len > count) *len = count;
  return (const char *)BPF_CORE_READ(iov, iov_base) + offset;
}

/* raw_tp/tcp_sendmsg_locked(sk, msg, skb, size_goal) (recent kernels): at each turn of
 * tcp_sendmsg_locked's copy loop, in the sender's context. Reported: the
 * first send on a socket, and later ones that start with an HTTP method;
 * only at the start of an iovec segment (iov_offset 0: the send's first turn,
 * or a later segment of a vectored send). */
SEC("raw_tp/tcp_sendmsg_locked")
int outpost_tcp_send(struct bpf_raw_tracepoint_args *ctx) {
  struct sock *sk = (struct sock *)ctx->args[0];
  struct msghdr *msg = (struct msghdr *)ctx->args[1];
  struct iov_iter *it = &msg->msg_iter;
  if (BPF_CORE_READ(it, iov_offset) != 0) return 0;
  unsigned long seg = 0;
  const void *p = iter_user_bytes(it, &seg);
  if (!p || seg == 0) return 0;
  __u64 key = (__u64)sk;
  struct owner *o = bpf_map_lookup_elem(&tcp_owners, &key);
  int first = !o || !(o->flags & OWNER_SENT);
  if (!first) { /* most sends: only an HTTP method is of interest */
    char head[4];
    if (seg < 4 || bpf_probe_read_user(head, 4, p) != 0 || !http_method(head)) return 0;
  }
  struct outpost_net_event *e = start(OUTPOST_NET_TCP_DATA, sizeof(struct outpost_net_event));
  if (!e) return 0;
  __u32 len = seg < OUTPOST_NET_TCP_DATA_MAX ? seg : OUTPOST_NET_TCP_DATA_MAX;
  len &= (2 * OUTPOST_NET_TCP_DATA_MAX - 1); /* changes nothing; older verifiers keep a mask's bound */
  if (len == 0 || bpf_probe_read_user(e->data, len, p) != 0 || !set_tuple(e, sk)) {
    discard(e);
    return 0;
  }
  set_current(e);
  e->data_len = len;
  e->msg_len = BPF_CORE_READ(it, count);
  if (e->msg_len > len) e->flags |= OUTPOST_NET_DATA_CUT;
  submit(e);
  if (o) {
    o->flags |= OWNER_SENT;
  } else { /* a socket connected or accepted before we started */
    struct owner fresh = {};
    fresh.flags = OWNER_SENT;
    bpf_map_update_elem(&tcp_owners, &key, &fresh, BPF_NOEXIST);
  }
  return 0;
}

/* ---- DNS over UDP: cgroup_skb on the cgroup v2 root ---- */

struct ipv4_hdr {
  __u8 ver_ihl;
  __u8 tos;
  __be16 tot_len;
  __be16 id;
  __be16 frag_off;
  __u8 ttl;
  __u8 protocol;
  __u16 check;
  __be32 saddr;
  __be32 daddr;
};

struct ipv6_hdr {
  __be32 ver_tc_flow;
  __be16 payload_len;
  __u8 nexthdr;
  __u8 hop_limit;
  __u8 saddr[16];
  __u8 daddr[16];
};

struct udp_hdr {
  __be16 source;
  __be16 dest;
  __be16 len;
  __u16 check;
};

/* The packet starts at its IP header. Returns 1 for a DNS message: to port
 * 53 on egress, from it on ingress; e's addresses as local, remote. */
static __always_inline int dns_packet(struct __sk_buff *skb, int egress, struct outpost_net_event *e) {
  __u32 l4;
  __u8 local[16] = {}, remote[16] = {};
  if (skb->protocol == bpf_htons(ETH_P_IP)) {
    struct ipv4_hdr ip;
    if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) != 0) return 0;
    if (ip.protocol != IPPROTO_UDP || (ip.frag_off & bpf_htons(0x1fff))) return 0; /* not a later fragment */
    l4 = (ip.ver_ihl & 0xf) * 4;
    __builtin_memcpy(local, egress ? &ip.saddr : &ip.daddr, 4);
    __builtin_memcpy(remote, egress ? &ip.daddr : &ip.saddr, 4);
    e->family = AF_INET;
  } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
    struct ipv6_hdr ip6;
    if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) != 0) return 0;
    if (ip6.nexthdr != IPPROTO_UDP) return 0; /* extension headers not followed */
    l4 = sizeof(ip6);
    __builtin_memcpy(local, egress ? ip6.saddr : ip6.daddr, 16);
    __builtin_memcpy(remote, egress ? ip6.daddr : ip6.saddr, 16);
    e->family = AF_INET6;
  } else {
    return 0;
  }
  struct udp_hdr udp;
  if (bpf_skb_load_bytes(skb, l4, &udp, sizeof(udp)) != 0) return 0;
  __u16 sport = bpf_ntohs(udp.source), dport = bpf_ntohs(udp.dest);
  if (egress ? dport != 53 : sport != 53) return 0;
  e->protocol = IPPROTO_UDP;
  e->sport = egress ? sport : dport;
  e->dport = egress ? dport : sport;
  __builtin_memcpy(e->saddr, local, 16);
  __builtin_memcpy(e->daddr, remote, 16);
  __u32 off = l4 + sizeof(udp);
  __u32 avail = skb->len > off ? skb->len - off : 0;
  __u32 udp_payload = bpf_ntohs(udp.len) > sizeof(udp) ? bpf_ntohs(udp.len) - sizeof(udp) : 0;
  e->msg_len = udp_payload;
  __u64 len = avail < udp_payload ? avail : udp_payload;
  if (len > OUTPOST_NET_DATA_MAX) e->flags |= OUTPOST_NET_DATA_CUT;
  /* Clang otherwise bounds one copy of len and passes another. */
  barrier_var(len);
  if (len > OUTPOST_NET_DATA_MAX) len = OUTPOST_NET_DATA_MAX;
  /* Reads paged data too (bpf_skb_load_bytes copes with fragments). */
  if (len > 0 && bpf_skb_load_bytes(skb, off, e->data, len) == 0) e->data_len = len;
  return 1;
}

/* The cheap test every packet takes: UDP, and port 53 on the right side
 * (a 4-byte IPv4 header word and the ports; IPv6: the next header byte). */
static __always_inline int dns_port(struct __sk_buff *skb, int egress) {
  __u32 l4;
  __u8 proto;
  if (skb->protocol == bpf_htons(ETH_P_IP)) {
    __u8 ver_ihl;
    if (bpf_skb_load_bytes(skb, 0, &ver_ihl, 1) != 0 || bpf_skb_load_bytes(skb, 9, &proto, 1) != 0) return 0;
    l4 = (ver_ihl & 0xf) * 4;
  } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
    if (bpf_skb_load_bytes(skb, 6, &proto, 1) != 0) return 0;
    l4 = sizeof(struct ipv6_hdr);
  } else {
    return 0;
  }
  if (proto != IPPROTO_UDP) return 0;
  __be16 port;
  if (bpf_skb_load_bytes(skb, l4 + (egress ? 2 : 0), &port, 2) != 0) return 0;
  return port == bpf_htons(53);
}

/* A DNS packet's record, its socket's cookie set; NULL for any other
 * packet (or no room: counted). */
static __always_inline struct outpost_net_event *dns_event(struct __sk_buff *skb, int egress) {
  if (!dns_port(skb, egress)) return 0;
  struct outpost_net_event *e =
      start(egress ? OUTPOST_NET_DNS_QUERY : OUTPOST_NET_DNS_ANSWER, sizeof(struct outpost_net_event));
  if (!e) return 0;
  if (!dns_packet(skb, egress, e)) {
    discard(e);
    return 0;
  }
  e->sock = bpf_get_socket_cookie(skb);
  return e;
}

/* Egress runs in ip_finish_output, called from udp_sendmsg: the sender's
 * context for UDP. Both programs let every packet through: they only watch. */
SEC("cgroup_skb/egress")
int outpost_dns_egress(struct __sk_buff *skb) {
  struct outpost_net_event *e = dns_event(skb, 1);
  if (!e) return 1;
  set_current(e);
  __u64 cookie = e->sock;
  struct owner o = {};
  fill_owner(&o);
  o.start_ns = e->time_ns;
  submit(e);
  bpf_map_update_elem(&dns_owners, &cookie, &o, BPF_ANY);
  return 1;
}

/* Ingress runs at the socket's receive (softirq): the process is the one
 * that sent the socket's last query, not the current task. */
SEC("cgroup_skb/ingress")
int outpost_dns_ingress(struct __sk_buff *skb) {
  struct outpost_net_event *e = dns_event(skb, 0);
  if (!e) return 1;
  __u64 cookie = e->sock;
  set_owner(e, bpf_map_lookup_elem(&dns_owners, &cookie));
  submit(e);
  return 1;
}
