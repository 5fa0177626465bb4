/* The few kernel types Outpost's eBPF programs read, declared by us with
 * preserve_access_index: libbpf relocates each field access by name against
 * the running kernel's BTF (CO-RE), so the programs need no kernel headers and
 * no vmlinux.h from the build machine. Only the fields read are declared. */
#ifndef OUTPOST_KERNEL_TYPES_H
#define OUTPOST_KERNEL_TYPES_H

#include "bpf_common.h"

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

typedef struct { unsigned int val; } kuid_t;
typedef struct { unsigned int val; } kgid_t;

struct cred {
  kuid_t uid;
  kgid_t gid;
};

struct qstr {
  const unsigned char *name;
};

struct dentry {
  struct dentry *d_parent;
  struct qstr d_name;
};

struct vfsmount {
  struct dentry *mnt_root;
};

struct mount {
  struct mount *mnt_parent;
  struct dentry *mnt_mountpoint;
  struct vfsmount mnt;
};

struct path {
  struct vfsmount *mnt;
  struct dentry *dentry;
};

struct file {
  struct path f_path;
};

struct fs_struct {
  struct path pwd;
};

struct mm_struct {
  unsigned long arg_start;
  unsigned long arg_end;
};

typedef struct { int counter; } atomic_t;

struct signal_struct {
  atomic_t live; /* threads not yet exited: 0 in the last one's exit */
};

struct task_struct {
  pid_t pid;
  pid_t tgid;
  struct task_struct *real_parent;
  struct task_struct *group_leader;
  __u64 start_time;
  __u64 start_boottime;
  const struct cred *cred;
  struct mm_struct *mm;
  struct fs_struct *fs;
  struct signal_struct *signal;
  int exit_code;
  char comm[16];
};

struct linux_binprm {
  struct file *file;
  const char *filename;
};

#pragma clang attribute pop

#endif
