/* Process events from the kernel: exec, fork (new processes, not threads)
 * and exit (the last thread of a process), from the scheduler's raw
 * tracepoints, into one ring buffer. A record the ring buffer has no room for
 * is counted in `lost`, per CPU, which the reader reports. */
#include "kernel_types.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "process_event.h"

char LICENSE[] SEC("license") = "GPL";

OUTPOST_RING_MAPS();
/* The sched tracepoints run in process context with preemption off: one
 * record per CPU at a time. Too large for the BPF stack. */
OUTPOST_SCRATCH_MAP(struct outpost_process_event);

#define DATA_SIZE (sizeof(((struct outpost_process_event *)0)->data))
#define HEADER_SIZE (sizeof(struct outpost_process_event) - DATA_SIZE)

static __always_inline struct outpost_process_event *start(__u32 kind, struct task_struct *task) {
  __u32 zero = 0;
  struct outpost_process_event *e = bpf_map_lookup_elem(&scratch, &zero);
  if (!e) return 0;
  struct task_struct *parent = BPF_CORE_READ(task, real_parent);
  e->kind = kind;
  e->pid = BPF_CORE_READ(task, tgid);
  e->tid = BPF_CORE_READ(task, pid);
  e->ppid = BPF_CORE_READ(parent, tgid);
  e->uid = BPF_CORE_READ(task, cred, uid.val);
  e->gid = BPF_CORE_READ(task, cred, gid.val);
  e->time_ns = bpf_ktime_get_boot_ns();
  if (bpf_core_field_exists(task->start_boottime)) {
    e->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
    e->parent_start_ns = BPF_CORE_READ(parent, group_leader, start_boottime);
  } else {
    e->start_ns = BPF_CORE_READ(task, group_leader, start_time);
    e->parent_start_ns = BPF_CORE_READ(parent, group_leader, start_time);
  }
  e->exit_code = 0;
  e->filename_len = e->exe_len = e->cwd_len = e->args_len = 0;
  e->flags = 0;
  BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
  return e;
}

static __always_inline void submit(struct outpost_process_event *e, __u32 used) {
  __u64 size = HEADER_SIZE + used;
  if (size > sizeof(*e)) size = sizeof(*e);
  if (bpf_ringbuf_output(&events, e, size, 0) != 0) {
    __u32 zero = 0;
    __u64 *count = bpf_map_lookup_elem(&lost, &zero);
    if (count) *count += 1;
  }
}

/* Appends a path's components at data[off], leaf first, each ended by a NUL,
 * crossing mount points up to the mount namespace's root (not a chroot's),
 * with no " (deleted)" for an unlinked file; returns the bytes written. */
static __always_inline __u32 put_path(struct outpost_process_event *e, __u32 off, struct path *p) {
  struct dentry *d = BPF_CORE_READ(p, dentry);
  struct vfsmount *vm = BPF_CORE_READ(p, mnt);
  struct mount *m = (struct mount *)((char *)vm - bpf_core_field_offset(struct mount, mnt));
  __u32 start = off;
  int complete = 0;
  for (int i = 0; i < OUTPOST_PATH_DEPTH; i++) {
    struct dentry *root = BPF_CORE_READ(vm, mnt_root);
    if (d == root) {
      struct mount *parent = BPF_CORE_READ(m, mnt_parent);
      if (parent == m) {
        complete = 1;
        break;
      }
      d = BPF_CORE_READ(m, mnt_mountpoint);
      m = parent;
      vm = (struct vfsmount *)((char *)m + bpf_core_field_offset(struct mount, mnt));
      continue;
    }
    struct dentry *up = BPF_CORE_READ(d, d_parent);
    if (up == d) {
      complete = 1;
      break;
    }
    if (off - start > OUTPOST_PATH_MAX - OUTPOST_NAME_MAX) break;
    const unsigned char *name = BPF_CORE_READ(d, d_name.name);
    long n = bpf_probe_read_kernel_str(&e->data[off & OUTPOST_DATA_MASK], OUTPOST_NAME_MAX, name);
    if (n <= 0) break;
    off += n;
    d = up;
  }
  /* Its own parent but not a mount's root: a file of no directory (memfd, an
   * anonymous file), named by itself alone. Outside the loop: inside, the
   * verifier's paths multiply past its limit. */
  if (complete && d != BPF_CORE_READ(vm, mnt_root) && off - start <= OUTPOST_PATH_MAX - OUTPOST_NAME_MAX) {
    long n = bpf_probe_read_kernel_str(&e->data[off & OUTPOST_DATA_MASK], OUTPOST_NAME_MAX, BPF_CORE_READ(d, d_name.name));
    if (n > 0) off += n;
  }
  if (!complete) e->flags |= OUTPOST_CUT_PATH;
  return off - start;
}

SEC("raw_tp/sched_process_exec")
int outpost_exec(struct bpf_raw_tracepoint_args *ctx) {
  struct task_struct *task = (struct task_struct *)ctx->args[0];
  struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
  struct outpost_process_event *e = start(OUTPOST_EXEC, task);
  if (!e) return 0;
  __u32 off = 0;
  long n = bpf_probe_read_kernel_str(&e->data[0], OUTPOST_PATH_MAX, BPF_CORE_READ(bprm, filename));
  if (n > 0) off = n;
  e->filename_len = off;
  struct path exe = BPF_CORE_READ(bprm, file, f_path);
  e->exe_len = put_path(e, off, &exe);
  off += e->exe_len;
  struct path cwd = BPF_CORE_READ(task, fs, pwd);
  e->cwd_len = put_path(e, off, &cwd);
  off += e->cwd_len;
  unsigned long arg_start = BPF_CORE_READ(task, mm, arg_start);
  unsigned long arg_end = BPF_CORE_READ(task, mm, arg_end);
  __u64 len = arg_end > arg_start ? arg_end - arg_start : 0;
  if (len > OUTPOST_ARGS_MAX) {
    len = OUTPOST_ARGS_MAX;
    e->flags |= OUTPOST_CUT_ARGS;
  }
  len &= OUTPOST_DATA_MASK; /* changes nothing; older verifiers keep the bound of a mask, not of a branch */
  if (len > 0 && bpf_probe_read_user(&e->data[off & OUTPOST_DATA_MASK], len, (const void *)arg_start) == 0) e->args_len = len;
  submit(e, off + e->args_len);
  return 0;
}

SEC("raw_tp/sched_process_fork")
int outpost_fork(struct bpf_raw_tracepoint_args *ctx) {
  struct task_struct *child = (struct task_struct *)ctx->args[1];
  if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid)) return 0; /* a thread */
  struct outpost_process_event *e = start(OUTPOST_FORK, child);
  if (e) submit(e, 0);
  return 0;
}

/* Processes whose exit was reported: in an exit_group, several threads may
 * each see `live` at 0 by the time they reach the tracepoint. Keyed by the
 * process's signal_struct and start (an address is reused, not both). */
struct exit_key {
  __u64 signal;
  __u64 start;
};
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 4096);
  __type(key, struct exit_key);
  __type(value, __u8);
} exited SEC(".maps");

SEC("raw_tp/sched_process_exit")
int outpost_exit(struct bpf_raw_tracepoint_args *ctx) {
  struct task_struct *task = (struct task_struct *)ctx->args[0];
  if (BPF_CORE_READ(task, signal, live.counter) != 0) return 0; /* not the process's last thread */
  struct exit_key key = {(__u64)BPF_CORE_READ(task, signal), BPF_CORE_READ(task, group_leader, start_time)};
  __u8 one = 1;
  if (bpf_map_update_elem(&exited, &key, &one, BPF_NOEXIST) != 0) return 0; /* another thread reported it */
  struct outpost_process_event *e = start(OUTPOST_EXIT, task);
  if (!e) return 0;
  e->exit_code = BPF_CORE_READ(task, exit_code);
  submit(e, 0);
  return 0;
}
