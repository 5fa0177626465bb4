/* The few kernel types Outpost's network programs read, declared by us with
 * preserve_access_index (CO-RE): libbpf relocates each field access by name
 * against the running kernel's BTF. Only the fields read are declared; a
 * struct whose name ends in ___something is a "flavor": the same kernel
 * struct, as an older kernel laid it out (libbpf ignores the suffix). */
#ifndef OUTPOST_NET_KERNEL_TYPES_H
#define OUTPOST_NET_KERNEL_TYPES_H

#include "bpf_common.h"

/* The cgroup_skb programs' context: UAPI (fixed offsets, rewritten by the
 * verifier), so no preserve_access_index; only its first members. */
struct __sk_buff {
  __u32 len;
  __u32 pkt_type;
  __u32 mark;
  __u32 queue_mapping;
  __u32 protocol; /* ETH_P_*, network order */
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

typedef struct { unsigned int val; } kuid_t;
struct cred {
  kuid_t uid;
};

struct in6_addr {
  union {
    __u8 u6_addr8[16];
  } in6_u; /* s6_addr is the kernel's macro for in6_u.u6_addr8 */
};

struct sock_common {
  __be32 skc_daddr;
  __be32 skc_rcv_saddr;
  __be16 skc_dport;
  __u16 skc_num;          /* local port, host order; 0 once unhashed at close */
  unsigned short skc_family;
  volatile unsigned char skc_state;
  struct in6_addr skc_v6_daddr;
  struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
  struct sock_common __sk_common;
  /* A u16 since 5.6, an 8-bit bitfield before: read with
   * BPF_CORE_READ_BITFIELD_PROBED, which copes with both. */
  __u16 sk_protocol;
};

struct inet_sock {
  struct sock sk;
  __be16 inet_sport; /* kept through close, unlike skc_num */
};

struct socket {
  struct sock *sk;
};

struct file {
  void *private_data;
};

struct fdtable {
  unsigned int max_fds;
  struct file **fd;
};

struct files_struct {
  struct fdtable *fdt;
};

#if defined(__TARGET_ARCH_x86)
struct thread_info {
  __u32 status; /* TS_COMPAT while a 32-bit (ia32) system call runs */
};
#endif

struct task_struct {
#if defined(__TARGET_ARCH_x86)
  struct thread_info thread_info;
#endif
  pid_t pid;
  pid_t tgid;
  const struct cred *cred;
  struct files_struct *files;
  char comm[16];
};

struct iovec {
  void *iov_base;
  unsigned long iov_len;
};

/* iov_iter since 6.4: iter_type an u8 (5.14), a user buffer of one segment
 * as ITER_UBUF with `ubuf` (6.0), the iovec array renamed `__iov` (6.4). */
struct iov_iter {
  __u8 iter_type;
  unsigned long iov_offset;
  union {
    const struct iovec *__iov;
    void *ubuf;
  };
  unsigned long count;
};
/* 5.14 to 6.3: the iovec array was `iov`. */
struct iov_iter___pre64 {
  const struct iovec *iov;
};
/* Before 5.14: `type`, ITER_* bits or'ed with the direction (READ/WRITE). */
struct iov_iter___pre514 {
  unsigned int type;
};

enum iter_type {
  ITER_UBUF = 0,
  ITER_IOVEC = 1,
};

struct msghdr {
  struct iov_iter msg_iter;
};

#if defined(__TARGET_ARCH_x86)
struct pt_regs {
  unsigned long bx;      /* a 32-bit system call's first argument */
  unsigned long orig_ax; /* the syscall's number, at sys_exit */
};
#define OUTPOST_SYSCALL_NR_DIRECT(regs) ((regs)->orig_ax)
#define OUTPOST_NR_ACCEPT 43
#define OUTPOST_NR_ACCEPT4 288
/* A 32-bit process's (ia32: int 0x80, sysenter) numbers: accept() reaches
 * the kernel through socketcall(SYS_ACCEPT or SYS_ACCEPT4, args), or, since
 * Linux 4.3, as accept4. */
#define OUTPOST_TS_COMPAT 0x0002
#define OUTPOST_NR32_SOCKETCALL 102
#define OUTPOST_NR32_ACCEPT4 364
#define OUTPOST_SYS_ACCEPT 5
#define OUTPOST_SYS_ACCEPT4 18
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs {
  __s32 syscallno;
};
#define OUTPOST_SYSCALL_NR_DIRECT(regs) ((regs)->syscallno)
#define OUTPOST_NR_ACCEPT 202
#define OUTPOST_NR_ACCEPT4 242
#else
#error "add this architecture's pt_regs syscall number and accept numbers"
#endif

#pragma clang attribute pop

#endif
