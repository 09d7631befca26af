// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Device ingress and egress, with conntrack.
 *
 * netif_receive_skb: a frame entering a namespace's device, before PREROUTING
 * (no conntrack yet). net_dev_queue: a packet leaving through a device, after
 * POSTROUTING, so conntrack has run: a TCP/UDP packet without an entry there,
 * in a namespace that uses conntrack, was INVALID (HOP_F_CT_MISSING).
 * Tracepoints, not TC: they see every device of every owned namespace without
 * attaching anything per interface, and leave nothing behind but a link.
 *
 * Each packet that carries a conntrack entry first reveals that entry (or a
 * change of its status) with a HOP_KIND_CT record: the NAT mapping that lets
 * user space join the two sides of a NAT hop.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "events.h"
#include "maps.bpf.h"
#include "parse.bpf.h"
#include "filter.bpf.h"
#include "shared_maps.bpf.h"
#include "emit.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HOP_MAX_IFNAMES);
	__type(key, char[HOP_IFNAMSIZ]);
	__type(value, __u8);
} hop_ifnames SEC(".maps");

/* --- private --- */

/* Last CT record per nf_conn, so one is written per new entry or change: direct-mapped
 * by the entry's address (HOP_CT_SLOTS x 16 bytes). An array, not an LRU hash: the
 * check runs for every packet that carries an entry, and an inlined lookup costs a few
 * loads where a hash lookup cost ~50 ns. Two live entries sharing a slot only repeat
 * a record now and then (harmless: records of one entry are the same facts). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HOP_CT_SLOTS);
	__type(key, __u32);
	__type(value, struct hop_ct_seen);
} hop_ct_seen SEC(".maps");

/* TCP connections' identity and sampling choice (filter.bpf.h hop_conn_packet): 4 MiB,
 * direct-mapped by the connection's tuple hash. An array, not a hash map: its lookup
 * is a few inlined instructions, where a hash lookup added ~30 ns to every packet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HOP_CONN_SLOTS);
	__type(key, __u32);
	__type(value, struct hop_conn_slot);
} hop_conns SEC(".maps");

/*
 * Packets sampled out at an earlier device of this node, per CPU, direct-mapped by their
 * segment fingerprint. A packet crosses every device of its path on one node as the same skb (a
 * veth hands it to its peer, routing forwards it), and its connection's choice (by its
 * client ISN, filter.bpf.h) is the same at each: so only the first device parses it and
 * looks its connection up, and the others find it here after a few loads (a lab packet
 * crosses 8 owned devices). Only choices made by a connection's slot, after its handshake,
 * are kept, so none differs from what the full path would decide; an entry matches only the packet with
 * the same address and the same segment fingerprint, so a freed and reused skb is
 * another packet. A packet handled on another CPU takes the full path.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOP_SKIP_SLOTS);
	__type(key, __u32);
	__type(value, struct hop_skip);
} hop_skips SEC(".maps");

/* Scratch for the CT record: a second 128-byte record would crowd the 512-byte
 * BPF stack that the packet record and header parsing already use. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hop_event);
} hop_scratch SEC(".maps");

static __always_inline void maybe_emit_ct(const struct hop_event *pkt, const struct nf_conn *ct)
{
	__u32 slot = hop_mix32(hop_fold_ptr(ct)) & (HOP_CT_SLOTS - 1);
	struct hop_ct_seen *was = bpf_map_lookup_elem(&hop_ct_seen, &slot);
	if (!was)
		return;
	struct nf_conntrack_tuple orig, reply;
	hop_ct_read_tuple(&orig, ct, 0);
	hop_ct_read_tuple(&reply, ct, 1);
	__u32 fingerprint = hop_ct_fingerprint(&orig, &reply);
	if (was->ct == (__u64)ct && was->status == pkt->ct_status && was->fingerprint == fingerprint) {
		hop_count(&hop_counters, HOP_CTR_CT_DEDUPED);
		return;
	}
	was->ct = (__u64)ct;
	was->status = pkt->ct_status;
	was->fingerprint = fingerprint;

	__u32 zero = 0;
	struct hop_event *e = bpf_map_lookup_elem(&hop_scratch, &zero);
	if (!e)
		return;
	hop_ct_record_for(e, pkt, &orig, &reply);
	hop_emit(e);
}

#define HOP_TCQ_F_MQROOT 8 /* include/net/sch_generic.h */

/* A device whose root qdisc is noqueue (veth, loopback, bridges and tunnels by
 * default: every pod interface) hands a packet to its driver within
 * dev_queue_xmit, so nothing waits between the two hooks. A root without enqueue
 * is noqueue unless it is mq's container of per-queue qdiscs. */
static __always_inline bool hop_dev_noqueue(const struct net_device *dev)
{
	const struct Qdisc *q = dev ? dev->qdisc : NULL;
	return q && !q->enqueue && !(q->flags & HOP_TCQ_F_MQROOT);
}

/* Whether dev's namespace is owned (its inode into *ino); counts it when not. */
static __always_inline bool device_netns_admit(const struct hop_filter_cfg *cfg, const struct net_device *dev, __u32 *ino)
{
	*ino = hop_dev_netns(dev);
	if (hop_netns_admit(cfg, &hop_netns, *ino))
		return true;
	hop_count(&hop_counters, HOP_CTR_NETNS_FILTERED);
	return false;
}

/* `tc`: called from a TC program, where the link header is pushed back on at ingress
 * too and network_header is already set; at netif_receive_skb data is the IP header. */
static __always_inline int on_device(struct sk_buff *skb, __u8 hook, bool ingress, bool tc)
{
	const struct hop_filter_cfg *cfg = hop_cfg_get(&hop_cfg);
	const struct net_device *dev = skb->dev;
	/* A tracepoint fires for every device of the machine: the namespace check comes first.
	 * A tcx program is linked only to the owned namespaces' devices (tcx.ts links and
	 * unlinks them as ownership changes), so it checks only a packet it keeps, which
	 * still holds the rule while a link outlives its namespace's ownership. Saves ~6% of
	 * a sampled-out run's time (npm run bench:kernel-ab, same packets). */
	__u32 ino = 0;
	if (!tc && !device_netns_admit(cfg, dev, &ino))
		return 0;
	/* Before the other filters: whether net_dev_start_xmit has work on this node. The agent
	 * links it only while this count moves (a tracepoint run for every packet of
	 * every device, ~1% of a CPU-bound node's CPU, that records nothing on noqueue). */
	if (!ingress && hook != HOP_HOOK_NET_DEV_XMIT && !hop_dev_noqueue(dev))
		hop_count(&hop_counters, HOP_CTR_QUEUED_EGRESS);
	__u16 proto = bpf_ntohs(skb->protocol);
	if (proto != HOP_ETH_P_IP && proto != HOP_ETH_P_IPV6) {
		hop_count(&hop_counters, HOP_CTR_NOT_IP);
		return 0;
	}

	/* At netif_receive_skb the link header is already pulled (data is the IP
	 * header) but network_header is reset only after the tracepoint. */
	const unsigned char *nh = ingress && !tc ? skb->data : hop_skb_nh(skb);
	/* Sampled out at an earlier device already? (hop_skips) */
	__u64 fp = cfg && cfg->sample_n > 1 ? hop_segment_fp(nh) : 0;
	struct hop_skip *skip = NULL;
	if (fp) {
		/* by the fingerprint: the skb is a pointer, which the verifier will not hash */
		__u32 slot = hop_mix32((__u32)fp ^ (__u32)(fp >> 32)) & (HOP_SKIP_SLOTS - 1);
		skip = bpf_map_lookup_elem(&hop_skips, &slot);
		if (skip && skip->skb == (__u64)skb && skip->fp == fp) {
			hop_count(&hop_counters, HOP_CTR_SAMPLED_OUT_SEEN);
			return 0;
		}
	}

	struct hop_event ev;
	struct hop_event *e = &ev;
	__builtin_memset(e, 0, sizeof(*e));
	/* The device name is read once a packet is kept, unless it is filtered on. */
	bool by_ifname = cfg && (cfg->flags & HOP_CFG_IFNAME);
	if (by_ifname) {
		hop_fill_dev(e, dev);
		if (!bpf_map_lookup_elem(&hop_ifnames, e->pkt.ifname)) {
			hop_count(&hop_counters, HOP_CTR_IFNAME_FILTERED);
			return 0;
		}
	}

	__u32 l3len = nh ? hop_skb_l3len(skb, nh) : 0;
	int r = nh ? hop_parse_l3(e, nh, l3len) : HOP_PARSE_TRUNCATED;
	if (r == HOP_PARSE_NOT_IP) {
		hop_count(&hop_counters, HOP_CTR_NOT_IP);
		return 0;
	}
	if (r == HOP_PARSE_TRUNCATED) {
		e->flags |= HOP_F_TRUNCATED;
		e->family = proto == HOP_ETH_P_IP ? HOP_AF_INET : HOP_AF_INET6;
		hop_count(&hop_counters, HOP_CTR_TRUNCATED);
	}

	__u32 why = hop_tuple_admit(cfg, &hop_addrs, &hop_ports, e);
	if (why) {
		hop_count(&hop_counters, why);
		return 0;
	}
	if (!hop_conn_packet(cfg, &hop_conns, e)) {
		hop_count(&hop_counters, HOP_CTR_SAMPLED_OUT);
		/* The connection's choice (HOP_F_CONN), not the tuple's: the same at every device.
		 * Never a handshake packet: each device must see it to fill its own slot for the
		 * tuple it sees (after a DNAT, another slot), or the connection's later packets
		 * that miss this table there would fall back to the tuple's choice. */
		if (skip && (e->flags & HOP_F_CONN) && !(e->tcp_flags & HOP_TCPF_SYN)) {
			skip->skb = (__u64)skb;
			skip->fp = fp;
		}
		return 0;
	}
	if (tc && !device_netns_admit(cfg, dev, &ino))
		return 0;
	if (!by_ifname)
		hop_fill_dev(e, dev);

	e->ts_ns = bpf_ktime_get_ns();
	e->skb_id = (__u64)skb;
	e->netns_ino = ino;
	e->kind = HOP_KIND_PACKET;
	e->hook = hook;
	e->flags |= ingress ? HOP_F_INGRESS : HOP_F_EGRESS;
	e->pkt.mark = skb->mark;
	/* from the IP header on, as netif_receive_skb sees it (TC ingress has the link header pushed back) */
	e->pkt.aux[0] = ingress && tc && nh ? l3len : skb->len;

	struct nf_conn *ct = hop_fill_ct(e, skb, !ingress);
	if (ct)
		maybe_emit_ct(e, ct);
	hop_emit(e);
	return 0;
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(hop_netif_receive_skb, struct sk_buff *skb)
{
	return on_device(skb, HOP_HOOK_NETIF_RECEIVE, true, false);
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(hop_net_dev_queue, struct sk_buff *skb)
{
	return on_device(skb, HOP_HOOK_NET_DEV_QUEUE, false, false);
}

/* After the qdisc, as the driver gets the packet: the gap from net_dev_queue is time
 * spent queued (netem, shaping, a full queue), measured on one clock. On a device
 * without a queue it would repeat net_dev_queue's record, a third of all packet
 * records on a node of veth pairs, so it is not taken there. */
SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(hop_net_dev_start_xmit, const struct sk_buff *skb, const struct net_device *dev)
{
	if (hop_dev_noqueue(dev))
		return 0;
	return on_device((struct sk_buff *)skb, HOP_HOOK_NET_DEV_XMIT, false, false);
}

/*
 * The same device ingress and egress as TC programs, attached by the agent (tcx
 * links) to each device of each owned namespace instead of to a tracepoint that
 * fires for every device of the machine: a packet costs nothing in a namespace not
 * owned, and a tcx program's call is cheaper than a tracepoint's. Ingress runs just
 * after netif_receive_skb (before PREROUTING), egress just before net_dev_queue
 * (after POSTROUTING), so both see what their tracepoints see. They never change
 * the packet's fate (TCX_NEXT: the next program, or the kernel's default).
 */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

SEC("tc")
int hop_tc_ingress(struct __sk_buff *ctx)
{
	on_device(bpf_cast_to_kern_ctx(ctx), HOP_HOOK_TC_INGRESS, true, true);
	return TCX_NEXT;
}

SEC("tc")
int hop_tc_egress(struct __sk_buff *ctx)
{
	on_device(bpf_cast_to_kern_ctx(ctx), HOP_HOOK_TC_EGRESS, false, true);
	return TCX_NEXT;
}
