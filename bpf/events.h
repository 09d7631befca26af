/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * hoptrace record ABI: the fixed-size record the kernel programs write into the
 * ring buffer, that recordings store, and that agents pack into Kafka messages.
 *
 * Types only: no maps, no programs, no code. The one TypeScript decoder is
 * services/shared/record.ts; test/unit/record.test.ts pins this layout with golden
 * bytes and test/unit/abi-names.test.ts checks that the enums below, the decoder
 * and proto/hoptrace/v1/hop.proto have not drifted apart.
 *
 * Every multi-byte field is in host byte order (little endian on the machines
 * hoptrace supports): the kernel side converts ports, sequence numbers and IP ids
 * from network order before writing, so user space never byte-swaps.
 *
 * Layout (offsets in bytes, 128 in all):
 *   0  u64 ts_ns        kernel CLOCK_MONOTONIC, ns (bpf_ktime_get_ns)
 *   8  u64 skb_id       skb address: one packet's identity within one node; 0 for socket events
 *  16  u32 netns_ino    network namespace inode
 *  20  u32 ifindex      interface index in that namespace; 0 when not on a device
 *  24  u8  abi_version  HOP_ABI_VERSION; any other value marks the record corrupt
 *  25  u8  kind         enum hop_kind
 *  26  u8  hook         enum hop_hook
 *  27  u8  family       2 (AF_INET) or 10 (AF_INET6)
 *  28  u8  l4proto      IPPROTO_* (6 = TCP)
 *  29  u8  tcp_flags    FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80
 *  30  u8  sk_state     kernel TCP state (1 ESTABLISHED .. 12 NEW_SYN_RECV); 0 = unknown
 *  31  u8  ct_info      enum ip_conntrack_info of the skb; valid when HOP_F_CT is set
 *  32  u32 ct_id        conntrack identity (nf_conn address folded to 32 bits); 0 = none
 *  36  u32 ct_status    IPS_* bits of the conntrack entry
 *  40  u16 reason       kind DROP: enum skb_drop_reason; RST_SENT: enum sk_rst_reason;
 *                       SOCK_STATE: the old TCP state; otherwise 0
 *  42  u16 ip_id        IPv4 identification; 0 for IPv6
 *  44  u16 payload_len  L4 payload bytes (TCP: after the TCP header)
 *  46  u16 flags        HOP_F_* bits
 *  48  tuple            36 bytes (struct hop_tuple): the packet's tuple as seen at this hook;
 *                       for kind CT, the conntrack ORIGINAL tuple
 *  84  union            44 bytes: pkt (seq/ack/window/ifname/mark) or ct (REPLY tuple)
 *
 * Addresses are 16 bytes; IPv4 uses the first 4 and zeroes the rest.
 */
#ifndef HOPTRACE_EVENTS_H
#define HOPTRACE_EVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define HOP_ABI_VERSION 1
#define HOP_RECORD_SIZE 128
#define HOP_IFNAMSIZ 16

/* What a record says happened. */
enum hop_kind {
	HOP_KIND_UNSPECIFIED = 0,
	HOP_KIND_PACKET = 1,     /* a packet seen at a device hook */
	HOP_KIND_CT = 2,         /* a conntrack entry's original and reply tuples (NAT mapping) */
	HOP_KIND_DROP = 3,       /* skb:kfree_skb with a drop reason */
	HOP_KIND_RST_SENT = 4,   /* tcp:tcp_send_reset */
	HOP_KIND_RST_RECV = 5,   /* tcp:tcp_receive_reset */
	HOP_KIND_RETRANS = 6,    /* tcp:tcp_retransmit_skb */
	HOP_KIND_SOCK_STATE = 7, /* sock:inet_sock_set_state */
};

/* Where in the stack it was seen. */
enum hop_hook {
	HOP_HOOK_UNSPECIFIED = 0,
	HOP_HOOK_NETIF_RECEIVE = 1, /* net:netif_receive_skb, device ingress before PREROUTING */
	HOP_HOOK_NET_DEV_QUEUE = 2, /* net:net_dev_queue, device egress after POSTROUTING */
	HOP_HOOK_NET_DEV_XMIT = 3,  /* net:net_dev_start_xmit, handed to the driver */
	HOP_HOOK_TC_INGRESS = 4,    /* TC clsact ingress */
	HOP_HOOK_TC_EGRESS = 5,     /* TC clsact egress */
	HOP_HOOK_KFREE_SKB = 6,     /* skb:kfree_skb */
	HOP_HOOK_TCP_SEND_RESET = 7,
	HOP_HOOK_TCP_RECEIVE_RESET = 8,
	HOP_HOOK_TCP_RETRANSMIT = 9,
	HOP_HOOK_SOCK_SET_STATE = 10,
};

/* Record flags. */
enum hop_flag {
	HOP_F_CT = 1 << 0,          /* the skb carried a conntrack entry; ct_* fields are valid */
	HOP_F_CT_UNTRACKED = 1 << 1, /* the skb carried the untracked template */
	HOP_F_CT_MISSING = 1 << 2,  /* conntrack ran (after PREROUTING/OUTPUT) and left no entry: INVALID */
	HOP_F_INGRESS = 1 << 3,     /* the packet was entering the namespace at this hook */
	HOP_F_EGRESS = 1 << 4,      /* the packet was leaving the namespace at this hook */
	HOP_F_TRUNCATED = 1 << 5,   /* headers could not be read in full; tuple may be partial */
	HOP_F_CONN = 1 << 6,        /* PACKET: aux[1], aux[2] hold the TCP connection's client and server ISNs */
};

/* DROP records, aux[2]: where in the IP path the skb was when dropped, read from the
 * skb (ingress or not, routed or not, to a local or a forwarding route, device set
 * or not). For a netfilter drop it names the hook that dropped it. */
enum hop_stage {
	HOP_STAGE_UNSPECIFIED = 0,
	HOP_STAGE_PREROUTING = 1,  /* received, not yet routed */
	HOP_STAGE_INPUT = 2,       /* received, routed to this host */
	HOP_STAGE_FORWARD = 3,     /* received, routed onwards */
	HOP_STAGE_OUTPUT = 4,      /* locally generated, no device yet */
	HOP_STAGE_POSTROUTING = 5, /* leaving: output device chosen */
};

struct hop_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
};

struct hop_pkt {
	__u32 seq;                  /* TCP sequence number */
	__u32 ack;                  /* TCP acknowledgement number */
	__u16 window;               /* TCP window, unscaled */
	__u16 _pad;
	char ifname[HOP_IFNAMSIZ];  /* device name, NUL padded */
	__u32 mark;                 /* skb->mark */
	/*
	 * kind-specific:
	 *   PACKET:   aux[0] = skb->len (bytes from the current header on, GSO super-packet whole);
	 *             with HOP_F_CONN, aux[1] = client ISN, aux[2] = server ISN (0 before the
	 *             SYN-ACK passed this node), learned by the kernel from the handshake
	 *   DROP:     aux[0..1] = kernel text address that freed the skb (low, high word; symbolize
	 *             with /proc/kallsyms), aux[2] = enum hop_stage
	 *   RST_SENT, RST_RECV: aux[0] = snd_nxt, aux[1] = rcv_nxt, aux[2] = snd_una (full sockets only)
	 *   RETRANS:  aux[0] = snd_nxt, aux[1] = rcv_nxt, aux[2] = error of the retransmit (s32)
	 */
	__u32 aux[3];
};

struct hop_ct {
	struct hop_tuple reply;     /* conntrack REPLY tuple */
	__u32 _pad[2];
};

struct hop_event {
	__u64 ts_ns;
	__u64 skb_id;
	__u32 netns_ino;
	__u32 ifindex;
	__u8 abi_version;
	__u8 kind;
	__u8 hook;
	__u8 family;
	__u8 l4proto;
	__u8 tcp_flags;
	__u8 sk_state;
	__u8 ct_info;
	__u32 ct_id;
	__u32 ct_status;
	__u16 reason;
	__u16 ip_id;
	__u16 payload_len;
	__u16 flags;
	struct hop_tuple tuple;
	union {
		struct hop_pkt pkt;
		struct hop_ct ct;
	};
};

_Static_assert(sizeof(struct hop_tuple) == 36, "hop_tuple layout");
_Static_assert(sizeof(struct hop_pkt) == 44, "hop_pkt layout");
_Static_assert(sizeof(struct hop_ct) == 44, "hop_ct layout");
_Static_assert(sizeof(struct hop_event) == HOP_RECORD_SIZE, "hop_event layout");

#endif /* HOPTRACE_EVENTS_H */
