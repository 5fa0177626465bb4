/* What Outpost's eBPF programs share: the kernel's integer types (no kernel
 * headers are used), the map types libbpf's headers name, and the maps every
 * program set has: its ring buffer and a per-CPU count of the records it had
 * no room for. */
#ifndef OUTPOST_BPF_COMMON_H
#define OUTPOST_BPF_COMMON_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef int pid_t;
typedef _Bool bool;

enum bpf_map_type {
  BPF_MAP_TYPE_HASH = 1,
  BPF_MAP_TYPE_ARRAY = 2,
  BPF_MAP_TYPE_PERCPU_ARRAY = 6,
  BPF_MAP_TYPE_LRU_HASH = 9,
  BPF_MAP_TYPE_RINGBUF = 27,
};
enum { BPF_ANY = 0, BPF_NOEXIST = 1 };

struct bpf_raw_tracepoint_args {
  __u64 args[0];
};

/* Use after bpf_helpers.h. The reader sizes `events` before loading. */
#define OUTPOST_RING_MAPS()                       \
  struct {                                        \
    __uint(type, BPF_MAP_TYPE_RINGBUF);           \
    __uint(max_entries, 1 << 20);                 \
  } events SEC(".maps");                          \
  struct {                                        \
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);      \
    __uint(max_entries, 1);                       \
    __type(key, __u32);                           \
    __type(value, __u64);                         \
  } lost SEC(".maps")

/* A per-CPU record to assemble one in: only for programs that cannot
 * interrupt one another on a CPU (all in process context). */
#define OUTPOST_SCRATCH_MAP(record)               \
  struct {                                        \
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);      \
    __uint(max_entries, 1);                       \
    __type(key, __u32);                           \
    __type(value, record);                        \
  } scratch SEC(".maps")

#endif
