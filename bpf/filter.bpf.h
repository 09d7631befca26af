/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Static inline helpers for admission (namespace, tuple filters, sampling)
 * and counting (emission is emit.bpf.h's). They take the maps as arguments (as libbpf-tools'
 * maps.bpf.h does), so this header defines no map: each *.bpf.c defines the
 * shared maps of bpf/maps.bpf.h and passes them in. __always_inline lets the
 * verifier see each map argument as the constant map it is.
 *
 * Include after vmlinux.h, the libbpf headers, events.h and maps.bpf.h.
 */
#ifndef HOPTRACE_FILTER_BPF_H
#define HOPTRACE_FILTER_BPF_H

static __always_inline void hop_count(void *counters, __u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(counters, &idx);
	/* atomic although per-CPU: a softirq program can nest inside a task one */
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline __u32 hop_mix32(__u32 h)
{
	h *= 0x9e3779b1u;
	h ^= h >> 15;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	return h;
}

static __always_inline const struct hop_filter_cfg *hop_cfg_get(void *cfg_map)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(cfg_map, &zero);
}

/*
 * Events outside the owned namespaces never leave the kernel. An owned inode sits in
 * the live table within HOP_NETNS_PROBES slots of its home slot, hop_mix32(ino), and
 * before the first empty one (linear probing; services/agent/live/filters.ts places
 * them the same way).
 */
static __always_inline bool hop_netns_admit(const struct hop_filter_cfg *cfg, void *netns_map, __u32 ino)
{
	if (!cfg || !(cfg->flags & HOP_CFG_NETNS))
		return true;
	if (!ino)
		return false;
	__u32 base = cfg->netns_base ? HOP_NETNS_SLOTS : 0;
	__u32 home = hop_mix32(ino);
#pragma unroll
	for (__u32 i = 0; i < HOP_NETNS_PROBES; i++) {
		__u32 slot = base + ((home + i) & (HOP_NETNS_SLOTS - 1));
		const __u32 *v = bpf_map_lookup_elem(netns_map, &slot);
		if (!v || !*v)
			return false;
		if (*v == ino)
			return true;
	}
	return false;
}

static __always_inline bool hop_addr_match(void *addrs, const __u8 *addr, __u8 family)
{
	struct hop_addr_key k = { .prefixlen = 128 };
	if (family == HOP_AF_INET) {
		__builtin_memset(k.addr, 0, 10);
		k.addr[10] = 0xff;
		k.addr[11] = 0xff;
		__builtin_memcpy(k.addr + 12, addr, 4);
	} else {
		__builtin_memcpy(k.addr, addr, 16);
	}
	return bpf_map_lookup_elem(addrs, &k) != NULL;
}

/* Protocol, address and port filters. Returns 0 to admit, else the counter
 * index that says why not. */
static __always_inline __u32 hop_tuple_admit(const struct hop_filter_cfg *cfg, void *addrs, void *ports,
					     const struct hop_event *e)
{
	if (!cfg || !cfg->flags)
		return 0;
	if (cfg->flags & HOP_CFG_PROTO) {
		__u8 p = e->l4proto;
		if (!(cfg->proto_bits[(p >> 6) & 3] & (1ULL << (p & 63))))
			return HOP_CTR_PROTO_FILTERED;
	}
	if ((cfg->flags & HOP_CFG_ADDR) && !hop_addr_match(addrs, e->tuple.saddr, e->family) &&
	    !hop_addr_match(addrs, e->tuple.daddr, e->family))
		return HOP_CTR_ADDR_FILTERED;
	if (cfg->flags & HOP_CFG_PORT) {
		__u16 sp = e->tuple.sport, dp = e->tuple.dport;
		if (!bpf_map_lookup_elem(ports, &sp) && !bpf_map_lookup_elem(ports, &dp))
			return HOP_CTR_PORT_FILTERED;
	}
	return 0;
}

/* 1 hash in n: a mask when n is a power of two (the same choice as the remainder, without a division per packet). */
static __always_inline bool hop_sampled_in(__u32 h, __u32 n)
{
	if (n <= 1)
		return true;
	return (n & (n - 1)) == 0 ? (h & (n - 1)) == 0 : h % n == 0;
}

#define HOP_TCPF_SYN 0x02
#define HOP_TCPF_ACK 0x10

/*
 * Per-connection state of TCP packets, in `slots` (HOP_CONN_SLOTS struct
 * hop_conn_slot, indexed by a symmetric hash of the tuple this node sees, so both
 * directions find it), learned from the handshake as it passes:
 *
 * - Identity: the connection's client and server ISNs (the SYN carries the client's
 *   as seq; the SYN-ACK the server's as seq and the client's as ack - 1). NAT leaves
 *   them alone, so the pair names the connection on every node and both sides of a
 *   NAT. Each later packet of the connection is stamped with it (aux[1], aux[2],
 *   HOP_F_CONN), so the agent joins it to its connection without a lookup of its own.
 *   Before the SYN-ACK has passed, records carry the client ISN and a server ISN of 0.
 * - Sampling: 1 connection in sample_n is kept, chosen by its client ISN, so every
 *   node it crosses keeps or drops it alike.
 *
 * Other flows, connections whose handshake this node did not see, and a connection
 * whose slot a newer one took are sampled by the tuple hash (so the two sides of a
 * NAT may choose differently for them) and not stamped.
 */
#define HOP_SLOT_KEEP 1
#define HOP_SLOT_SET 2
static __always_inline bool hop_conn_packet(const struct hop_filter_cfg *cfg, void *slots, struct hop_event *e)
{
	__u32 n = cfg ? cfg->sample_n : 1;
	const __u32 *s = (const __u32 *)e->tuple.saddr;
	const __u32 *d = (const __u32 *)e->tuple.daddr;
	__u32 h = e->l4proto ^ ((__u32)e->tuple.sport ^ e->tuple.dport);
	h ^= (s[0] ^ d[0]) ^ (s[1] ^ d[1]) ^ (s[2] ^ d[2]) ^ (s[3] ^ d[3]);
	__u32 key = hop_mix32(h);
	bool by_tuple = hop_sampled_in(key, n);
	if (e->l4proto != IPPROTO_TCP || (e->flags & HOP_F_TRUNCATED))
		return by_tuple;
	__u32 idx = key & (HOP_CONN_SLOTS - 1);
	struct hop_conn_slot *v = bpf_map_lookup_elem(slots, &idx);
	if (!v)
		return by_tuple;
	__u32 isn_c, isn_s;
	bool keep;
	if (e->tcp_flags & HOP_TCPF_SYN) {
		bool synack = e->tcp_flags & HOP_TCPF_ACK;
		isn_c = synack ? e->pkt.ack - 1 : e->pkt.seq;
		isn_s = synack ? e->pkt.seq : 0;
		keep = hop_sampled_in(hop_mix32(isn_c), n);
		/* ISNs first, then the tag that makes them valid (x86 keeps stores in order) */
		v->isns = (__u64)isn_s << 32 | isn_c;
		v->tag = (__u64)key << 8 | HOP_SLOT_SET | keep;
	} else {
		__u64 tag = v->tag;
		if (!(tag & HOP_SLOT_SET) || (__u32)(tag >> 8) != key)
			return by_tuple;
		__u64 isns = v->isns;
		isn_c = (__u32)isns;
		isn_s = isns >> 32;
		keep = tag & HOP_SLOT_KEEP;
	}
	e->pkt.aux[1] = isn_c;
	e->pkt.aux[2] = isn_s;
	e->flags |= HOP_F_CONN;
	return keep;
}

#endif /* HOPTRACE_FILTER_BPF_H */
