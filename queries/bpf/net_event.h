/* The record Outpost's network programs (net.bpf.c) put in their ring
 * buffer. Plain C: compiled for both sides. */
#ifndef OUTPOST_NET_EVENT_H
#define OUTPOST_NET_EVENT_H

#define OUTPOST_COMM_LEN 16
#define OUTPOST_NET_DATA_MAX 512 /* DNS: the message's first 512 bytes; TCP: the first OUTPOST_NET_TCP_DATA_MAX */
#define OUTPOST_NET_TCP_DATA_MAX 256

enum outpost_net_kind {
  OUTPOST_NET_CONNECT = 1,   /* an outgoing TCP connection's outcome (result) */
  OUTPOST_NET_ACCEPT = 2,    /* a TCP connection accept()ed */
  OUTPOST_NET_CLOSE = 3,     /* a TCP connection's end (its socket to CLOSE) */
  OUTPOST_NET_DNS_QUERY = 4, /* a UDP datagram sent to port 53 */
  OUTPOST_NET_DNS_ANSWER = 5,/* a UDP datagram from port 53 delivered to a socket */
  OUTPOST_NET_TCP_DATA = 6,  /* the first bytes of a send on a TCP socket (HTTP request lines) */
};

#define OUTPOST_NET_PROCESS_KNOWN 1u /* pid..comm name the process (else zero) */
#define OUTPOST_NET_CLOSER_KNOWN 2u  /* close: closer_pid closed it (FIN sent from close/shutdown) */
#define OUTPOST_NET_DATA_CUT 4u      /* data holds only the message's first bytes */
#define OUTPOST_NET_OWNER_FROM_MAP 8u /* process from the socket's record (connect/accept/query), not the current task */

struct outpost_net_event {
  __u32 kind;
  __u32 pid;        /* thread group id */
  __u32 tid;
  __u32 uid;
  __u64 time_ns;    /* CLOCK_BOOTTIME */
  __u64 start_ns;   /* connect: when SYN_SENT was entered */
  __u64 sock;       /* the kernel socket's address (TCP) or socket cookie (DNS): pairs events */
  __s32 result;     /* connect: 0 established, else -(state it failed from: 2 SYN_SENT) */
  __u32 closer_pid; /* close: the process whose close()/shutdown() sent the FIN */
  __u32 flags;      /* OUTPOST_NET_* */
  __u32 data_len;   /* bytes of data */
  __u32 msg_len;    /* DNS: the UDP payload's length; TCP data: the send's length */
  __u16 family;     /* AF_INET 2, AF_INET6 10 */
  __u16 protocol;   /* IPPROTO_TCP 6, IPPROTO_UDP 17 */
  __u16 sport;      /* host order: the local side's port */
  __u16 dport;      /* the remote side's */
  __u8 saddr[16];   /* local address (IPv4: first 4 bytes), network order */
  __u8 daddr[16];   /* remote */
  char comm[OUTPOST_COMM_LEN];
  char data[OUTPOST_NET_DATA_MAX];
};

#endif
