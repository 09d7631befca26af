/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Static inline helpers for admission (namespace, tuple filters, sampling),
 * counting and emission. They take the maps as arguments (as libbpf-tools'
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

#define HOP_TCPF_SYN 0x02
#define HOP_TCPF_ACK 0x10

/*
 * Flow sampling, the same choice on every node a connection crosses. A TCP
 * connection is kept or not by its client's ISN, which NAT leaves alone: the SYN
 * carries it as seq, the SYN-ACK as ack - 1. The choice is remembered for the
 * connection's later packets in `decisions`, an array of HOP_SAMPLE_SLOTS u64
 * slots indexed by a symmetric hash of the tuple this node sees (so both
 * directions find it), each holding that hash << 8 | HOP_SAMPLE_SET | choice. Other
 * flows, connections whose handshake this node did not see, and a connection
 * whose slot a newer one took are chosen by the tuple hash, so the two sides of a
 * NAT may choose differently for them.
 */
#define HOP_SAMPLE_SET 2
static __always_inline bool hop_sampled_in(const struct hop_filter_cfg *cfg, void *decisions, const struct hop_event *e)
{
	if (!cfg || cfg->sample_n <= 1)
		return true;
	const __u32 *s = (const __u32 *)e->tuple.saddr;
	const __u32 *d = (const __u32 *)e->tuple.daddr;
	__u32 h = e->l4proto ^ ((__u32)e->tuple.sport ^ e->tuple.dport);
	h ^= (s[0] ^ d[0]) ^ (s[1] ^ d[1]) ^ (s[2] ^ d[2]) ^ (s[3] ^ d[3]);
	__u32 key = hop_mix32(h);
	if (e->l4proto != IPPROTO_TCP || (e->flags & HOP_F_TRUNCATED))
		return key % cfg->sample_n == 0;
	__u32 slot = key & (HOP_SAMPLE_SLOTS - 1);
	__u64 *v = bpf_map_lookup_elem(decisions, &slot);
	if (e->tcp_flags & HOP_TCPF_SYN) {
		__u32 isn = (e->tcp_flags & HOP_TCPF_ACK) ? e->pkt.ack - 1 : e->pkt.seq;
		bool in = hop_mix32(isn) % cfg->sample_n == 0;
		if (v)
			*v = (__u64)key << 8 | HOP_SAMPLE_SET | in; /* one aligned store */
		return in;
	}
	__u64 seen = v ? *v : 0;
	if ((seen & HOP_SAMPLE_SET) && (__u32)(seen >> 8) == key)
		return seen & 1;
	return key % cfg->sample_n == 0;
}

/*
 * Writes e to the ring buffer. Wakes the reader only once wakeup_bytes are
 * waiting: the agent also drains on a timer, so most records cost no wakeup.
 */
static __always_inline void hop_emit(void *ring, void *counters, struct hop_event *e, __u64 wakeup_bytes)
{
	__u64 flags = BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	e->abi_version = HOP_ABI_VERSION;
	if (bpf_ringbuf_output(ring, e, sizeof(*e), flags))
		hop_count(counters, HOP_CTR_RINGBUF_FULL);
	else
		hop_count(counters, HOP_CTR_EMITTED);
}

#endif /* HOPTRACE_FILTER_BPF_H */
