/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Types of the maps the kernel programs share with the agent: keys, values,
 * counter indices. Types only; the maps themselves are defined once, in
 * shared_maps.bpf.h, which every *.bpf.c includes. The agent creates each one
 * once and hands the same fd to every object (bpf_map__reuse_fd), so all
 * programs feed one ring buffer and obey one filter set.
 *
 * services/agent/live/kernel-abi.ts mirrors these names and layouts; the
 * privileged suite's abi test parses this file and checks they have not drifted.
 *
 * Shared maps (name: type, key -> value):
 *   hop_events:  RINGBUF of struct hop_event (bpf/events.h); size set by the agent
 *   hop_counters: PERCPU_ARRAY, u32 enum hop_counter -> u64
 *   hop_cfg:     ARRAY[1], u32 0 -> struct hop_filter_cfg
 *   hop_netns:   ARRAY[2 x HOP_NETNS_SLOTS], u32 slot -> u32 netns inode (owned namespaces:
 *                two open-addressed tables, hop_filter_cfg.netns_base picks the live one)
 *   hop_addrs:   LPM_TRIE, struct hop_addr_key -> u8
 *   hop_ports:   HASH, u16 port (host order) -> u8
 *   hop_ifnames: HASH, char[16] device name -> u8
 *   hop_runs:    PERCPU_ARRAY[1], u32 0 -> struct hop_run (each CPU's run of records not yet written)
 *   hop_flushers: ARRAY[possible CPUs], u32 cpu -> struct hop_flusher (that CPU's run timer)
 */
#ifndef HOPTRACE_MAPS_BPF_H
#define HOPTRACE_MAPS_BPF_H

#define HOP_MAX_NETNS 1024
/* Slots of one owned-namespace table (a power of two, 8x HOP_MAX_NETNS: short probe runs). */
#define HOP_NETNS_SLOTS 8192
/* Slots probed from an inode's home slot; the agent refuses a set that needs more. */
#define HOP_NETNS_PROBES 8
#define HOP_MAX_ADDRS 256
#define HOP_MAX_PORTS 256
#define HOP_MAX_IFNAMES 64
#define HOP_CT_SLOTS 65536 /* power of two */
#define HOP_CONN_SLOTS (1 << 18) /* power of two */

/* Why a would-be record was not written, or what happened to it. */
enum hop_counter {
	HOP_CTR_EMITTED = 0,        /* written to the ring buffer */
	HOP_CTR_RINGBUF_FULL = 1,   /* lost: bpf_ringbuf_output failed (ring full) */
	HOP_CTR_NETNS_FILTERED = 2, /* outside the owned namespaces */
	HOP_CTR_IFNAME_FILTERED = 3,
	HOP_CTR_PROTO_FILTERED = 4,
	HOP_CTR_ADDR_FILTERED = 5,
	HOP_CTR_PORT_FILTERED = 6,
	HOP_CTR_SAMPLED_OUT = 7,    /* packet of a flow not in the 1-in-N sample */
	HOP_CTR_NOT_IP = 8,         /* device hook saw a non-IP frame (ARP, ...) */
	HOP_CTR_TRUNCATED = 9,      /* headers unreadable; emitted with HOP_F_TRUNCATED */
	HOP_CTR_NO_NETNS = 10,      /* no device or socket to tell the namespace */
	HOP_CTR_CT_DEDUPED = 11,    /* CT record skipped: entry already reported unchanged */
	HOP_CTR_QUEUED_EGRESS = 12, /* left an owned device through a queueing root qdisc: net_dev_start_xmit has a record to take */
	HOP_CTR_SAMPLED_OUT_SEEN = 13, /* sampled out at a later device of its path: the packet's choice was known (packet.bpf.c hop_skips) */
	HOP_CTR_MAX = 14,
};

/* hop_filter_cfg.flags: which filters are on. Off means "admit all". */
enum hop_cfg_flag {
	HOP_CFG_NETNS = 1 << 0,  /* admit only namespaces in hop_netns */
	HOP_CFG_ADDR = 1 << 1,   /* admit only tuples with saddr or daddr in hop_addrs */
	HOP_CFG_PORT = 1 << 2,   /* admit only tuples with sport or dport in hop_ports */
	HOP_CFG_PROTO = 1 << 3,  /* admit only l4 protocols set in proto_bits */
	HOP_CFG_IFNAME = 1 << 4, /* device hooks: admit only devices in hop_ifnames */
};

struct hop_filter_cfg {
	__u32 flags;         /* enum hop_cfg_flag */
	__u32 sample_n;      /* PACKET records: keep flows whose hash % n == 0; 0 or 1 = all */
	__u64 proto_bits[4]; /* bit p set: IPPROTO p admitted (with HOP_CFG_PROTO) */
	__u32 netns_base;    /* first slot of the live hop_netns table: 0 or HOP_NETNS_SLOTS */
	__u32 _pad;
};

/* LPM key: IPv4 is stored IPv4-mapped (::ffff:a.b.c.d, prefix + 96). */
struct hop_addr_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* A slot of packet.bpf.c's direct-mapped table of TCP connections (filter.bpf.h hop_conn_packet). */
struct hop_conn_slot {
	__u64 tag;  /* symmetric tuple hash << 8 | HOP_SLOT_SET | HOP_SLOT_KEEP (sampled in) */
	__u64 isns; /* client ISN | server ISN << 32 (0 until the SYN-ACK has passed) */
};

/* Records per run at most (emit.bpf.h): a run fits one page. */
#define HOP_RUN_MAX 31

/* A CPU's records waiting to be written to the ring buffer together (emit.bpf.h). */
struct hop_run {
	__u64 busy;  /* taken by an append or a flush (atomic exchange) */
	__u32 count; /* records in ev */
	__u32 _pad;
	struct hop_event ev[HOP_RUN_MAX];
};

struct hop_flusher {
	struct bpf_timer timer; /* fires within hop_run_flush_ns of a run's opening, on its CPU */
	__u32 ready;            /* timer initialised and its callback set */
	__u32 armed;            /* timer pending: a run opened meanwhile is flushed by it */
};

/* A slot of packet.bpf.c's per-CPU table of packets sampled out at an earlier device. */
struct hop_skip {
	__u64 skb; /* its address */
	__u64 fp;  /* hop_segment_fp of its headers: a reused address is another packet */
};
#define HOP_SKIP_SLOTS 256 /* power of two */

/* A slot of packet.bpf.c's direct-mapped table that deduplicates CT records. */
struct hop_ct_seen {
	__u64 ct;          /* nf_conn address last reported in this slot */
	__u32 status;
	__u32 fingerprint; /* of the tuples: a reused nf_conn address is a new entry */
};

#endif /* HOPTRACE_MAPS_BPF_H */
