// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Drops: skb:kfree_skb carries the kernel's drop reason (enum skb_drop_reason;
 * the agent names it from the running kernel's BTF). Only drops, not
 * consumption: consume_skb has its own tracepoint.
 *
 * Where: the netns and device of the skb, HOP_F_INGRESS when it was received
 * (skb_iif set) else HOP_F_EGRESS, the kernel code address that freed it in
 * aux[0..1] (nf_hook_slow for a netfilter DROP; user space can symbolize it
 * with /proc/kallsyms), and the stage of the IP path in aux[2] (enum
 * hop_stage: for a netfilter drop, the hook).
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

#define HOP_IPS_NAT_MASK 0x30 /* IPS_SRC_NAT | IPS_DST_NAT */

/* Scratch for the CT record, as in packet.bpf.c: the drop record already takes 128 bytes of stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hop_event);
} hop_drop_scratch SEC(".maps");

/*
 * The NAT entry of a dropped packet, as a CT record beside the drop. A node that
 * translates a packet and then drops it (a policy in FORWARD after a service's DNAT)
 * records the drop with the translated tuple, which no other record of the connection
 * on that node carries when the packet never left it: the entry's original tuple is
 * the one its SYN came in with, and lets the agent put the drop in that connection
 * (connections.ts). Not deduplicated as packet.bpf.c's are: drops are few, and each
 * dropped packet gets its entry.
 */
static __always_inline void emit_nat_entry(const struct hop_event *drop, const struct nf_conn *ct)
{
	if (!(drop->ct_status & HOP_IPS_NAT_MASK))
		return;
	__u32 zero = 0;
	struct hop_event *e = bpf_map_lookup_elem(&hop_drop_scratch, &zero);
	if (!e)
		return;
	struct nf_conntrack_tuple orig, reply;
	hop_ct_read_tuple(&orig, ct, 0);
	hop_ct_read_tuple(&reply, ct, 1);
	hop_ct_record_for(e, drop, &orig, &reply);
	hop_emit(e);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(hop_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	const struct hop_filter_cfg *cfg = hop_cfg_get(&hop_cfg);
	__u32 ino = hop_skb_netns(skb);
	if (!ino)
		ino = hop_sk_netns(rx_sk);
	if (!ino) {
		hop_count(&hop_counters, HOP_CTR_NO_NETNS);
		return 0;
	}
	if (!hop_netns_admit(cfg, &hop_netns, ino)) {
		hop_count(&hop_counters, HOP_CTR_NETNS_FILTERED);
		return 0;
	}
	__u16 proto = bpf_ntohs(skb->protocol);
	if (proto != HOP_ETH_P_IP && proto != HOP_ETH_P_IPV6) {
		hop_count(&hop_counters, HOP_CTR_NOT_IP);
		return 0;
	}

	struct hop_event ev;
	struct hop_event *e = &ev;
	__builtin_memset(e, 0, sizeof(*e));
	const unsigned char *nh = hop_skb_nh(skb);
	int r = nh ? hop_parse_l3(e, nh, hop_skb_l3len(skb, nh)) : HOP_PARSE_TRUNCATED;
	if (r == HOP_PARSE_NOT_IP) {
		hop_count(&hop_counters, HOP_CTR_NOT_IP);
		return 0;
	}
	if (r == HOP_PARSE_TRUNCATED) {
		/* e.g. dropped before the IP header was built: the socket still names the flow */
		struct sock *sk = skb->sk;
		if (!sk)
			sk = rx_sk;
		__builtin_memset(&e->tuple, 0, sizeof(e->tuple));
		if (sk)
			hop_fill_sk_tuple(e, sk);
		else
			e->family = proto == HOP_ETH_P_IP ? HOP_AF_INET : HOP_AF_INET6;
		e->flags |= HOP_F_TRUNCATED;
		hop_count(&hop_counters, HOP_CTR_TRUNCATED);
	}
	__u32 why = hop_tuple_admit(cfg, &hop_addrs, &hop_ports, e);
	if (why) {
		hop_count(&hop_counters, why);
		return 0;
	}

	e->ts_ns = bpf_ktime_get_ns();
	e->skb_id = (__u64)skb;
	e->netns_ino = ino;
	e->kind = HOP_KIND_DROP;
	e->hook = HOP_HOOK_KFREE_SKB;
	e->reason = reason;
	hop_fill_dev(e, skb->dev);
	bool received = skb->skb_iif != 0;
	e->flags |= received ? HOP_F_INGRESS : HOP_F_EGRESS;
	e->pkt.mark = skb->mark;
	e->pkt.aux[0] = (__u32)(__u64)location;
	e->pkt.aux[1] = (__u32)((__u64)location >> 32);
	e->pkt.aux[2] = hop_skb_stage(skb, received, e->family);
	/* Where in the stack the drop happened is unknown here, so no CT_MISSING. */
	struct nf_conn *ct = hop_fill_ct(e, skb, false);
	hop_emit(e);
	if (ct)
		emit_nat_entry(e, ct);
	return 0;
}
