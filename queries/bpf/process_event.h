/* The record Outpost's process programs (process.bpf.c) put in their ring
 * buffer, read by kernel_process.cpp. Plain C: compiled for both sides. */
#ifndef OUTPOST_PROCESS_EVENT_H
#define OUTPOST_PROCESS_EVENT_H

#define OUTPOST_COMM_LEN 16
#define OUTPOST_ARGS_MAX 4096  /* argv bytes kept, NUL-separated */
#define OUTPOST_PATH_MAX 1024  /* each path's bytes kept */
#define OUTPOST_NAME_MAX 256   /* one path component */
#define OUTPOST_PATH_DEPTH 24  /* path components walked; deeper paths are cut at the root side */

#define OUTPOST_DATA_USED (OUTPOST_PATH_MAX * 3 + OUTPOST_ARGS_MAX)
#define OUTPOST_DATA_MASK 8191 /* >= OUTPOST_DATA_USED, a power of two less one */

enum outpost_process_kind { OUTPOST_EXEC = 1, OUTPOST_FORK = 2, OUTPOST_EXIT = 3 };

/* Header, then `data`: exec carries the filename as given to execve, the
 * executable's path, the working directory (each a path, components leaf
 * first, each ended by a NUL), then argv (NUL-separated). */
struct outpost_process_event {
  __u32 kind;
  __u32 pid;          /* thread group id: the process */
  __u32 tid;
  __u32 ppid;         /* the real parent's process */
  __u32 uid;
  __u32 gid;
  __u64 time_ns;      /* CLOCK_BOOTTIME */
  __u64 start_ns;     /* the process's start, CLOCK_BOOTTIME */
  __u64 parent_start_ns;
  __s32 exit_code;    /* exit: the wait status (code << 8 | signal) */
  __u32 filename_len; /* bytes of data, in this order */
  __u32 exe_len;
  __u32 cwd_len;
  __u32 args_len;
  __u32 flags;        /* OUTPOST_CUT_*: what did not fit */
  char comm[OUTPOST_COMM_LEN];
  /* Used up to OUTPOST_DATA_USED bytes; twice that so that the programs can
   * show the verifier an offset masked with OUTPOST_DATA_MASK stays inside. */
  char data[2 * (OUTPOST_DATA_MASK + 1)];
};

#define OUTPOST_CUT_ARGS 1u
#define OUTPOST_CUT_PATH 2u

#endif
