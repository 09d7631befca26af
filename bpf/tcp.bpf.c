// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * TCP socket events: resets sent and received, retransmissions, state changes.
 *
 * Tuples are local -> remote as the socket sees them. tcp_send_reset may have
 * no socket (NO_SOCKET); then the tuple and netns come from the packet that
 * triggered the reset, swapped so that it still reads local -> remote, and the
 * record carries that packet's seq/ack/flags/length and its skb identity (the
 * same skb_id as its netif_receive_skb record). Without a socket it also
 * carries the packet's conntrack state (conntrack has run by then, so a
 * tracked namespace with no entry means INVALID); with one, TCP has already
 * dropped that state, and the reset's own packet (PACKET, net_dev_queue) tells
 * whether conntrack knew the flow.
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

static __always_inline bool admit(const struct hop_filter_cfg *cfg, __u32 ino)
{
	if (!ino) {
		hop_count(&hop_counters, HOP_CTR_NO_NETNS);
		return false;
	}
	if (!hop_netns_admit(cfg, &hop_netns, ino)) {
		hop_count(&hop_counters, HOP_CTR_NETNS_FILTERED);
		return false;
	}
	return true;
}

static __always_inline bool admit_tuple(const struct hop_filter_cfg *cfg, const struct hop_event *e)
{
	__u32 why = hop_tuple_admit(cfg, &hop_addrs, &hop_ports, e);
	if (why)
		hop_count(&hop_counters, why);
	return !why;
}

/* Sequence-space state of a full socket, for reading a reset or retransmission. */
static __always_inline void fill_tcp_state(struct hop_event *e, const struct sock *sk)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	if (!hop_is_full_tcp_sock(e->sk_state))
		return;
	e->pkt.aux[0] = BPF_CORE_READ(tp, snd_nxt);
	e->pkt.aux[1] = BPF_CORE_READ(tp, rcv_nxt);
	e->pkt.aux[2] = BPF_CORE_READ(tp, snd_una);
}

/*
 * The start every socket event shares: the namespace and tuple filters (rejections
 * counted), then time, namespace, kind and hook. False when the filters reject it.
 */
static __always_inline bool sock_event(struct hop_event *e, const struct sock *sk, __u8 kind, __u8 hook)
{
	const struct hop_filter_cfg *cfg = hop_cfg_get(&hop_cfg);
	__u32 ino = hop_sk_netns(sk);
	if (!admit(cfg, ino))
		return false;
	__builtin_memset(e, 0, sizeof(*e));
	hop_fill_sk_tuple(e, sk);
	if (!admit_tuple(cfg, e))
		return false;
	e->ts_ns = bpf_ktime_get_ns();
	e->netns_ino = ino;
	e->kind = kind;
	e->hook = hook;
	return true;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(hop_tcp_send_reset, const struct sock *sk, const struct sk_buff *skb, const enum sk_rst_reason reason)
{
	const struct hop_filter_cfg *cfg = hop_cfg_get(&hop_cfg);
	__u32 ino = skb ? hop_skb_netns(skb) : 0;
	if (!ino)
		ino = hop_sk_netns(sk);
	if (!admit(cfg, ino))
		return 0;

	struct hop_event ev;
	struct hop_event *e = &ev;
	__builtin_memset(e, 0, sizeof(*e));
	e->sk_state = sk ? sk->__sk_common.skc_state : 0;
	const unsigned char *nh = skb ? hop_skb_nh(skb) : NULL;
	if (nh && hop_parse_l3(e, nh, hop_skb_l3len(skb, nh)) == HOP_PARSE_OK) {
		hop_swap_tuple(&e->tuple);
	} else if (sk) {
		__builtin_memset(e, 0, sizeof(*e));
		e->sk_state = sk->__sk_common.skc_state;
		hop_fill_sk_tuple(e, sk);
	} else {
		hop_count(&hop_counters, HOP_CTR_TRUNCATED);
		return 0;
	}
	if (!admit_tuple(cfg, e))
		return 0;

	e->ts_ns = bpf_ktime_get_ns();
	e->netns_ino = ino;
	e->kind = HOP_KIND_RST_SENT;
	e->hook = HOP_HOOK_TCP_SEND_RESET;
	e->reason = reason;
	if (sk)
		fill_tcp_state(e, sk);
	if (skb) {
		e->skb_id = (__u64)skb;
		e->flags |= HOP_F_INGRESS;
		e->pkt.mark = skb->mark;
		hop_fill_dev(e, skb->dev);
		/* Once tcp_v4_rcv/tcp_v6_rcv has found a socket it clears the skb's
		 * conntrack (nf_reset_ct) and device, so only a reset without a socket
		 * still tells whether conntrack had an entry for the packet. */
		if (!sk)
			hop_fill_ct(e, skb, true);
	} else {
		e->flags |= HOP_F_EGRESS;
	}
	hop_emit(e);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(hop_tcp_receive_reset, struct sock *sk)
{
	struct hop_event ev;
	struct hop_event *e = &ev;
	if (!sock_event(e, sk, HOP_KIND_RST_RECV, HOP_HOOK_TCP_RECEIVE_RESET))
		return 0;
	e->sk_state = sk->__sk_common.skc_state;
	e->flags |= HOP_F_INGRESS;
	fill_tcp_state(e, sk);
	hop_emit(e);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(hop_tcp_retransmit_skb, const struct sock *sk, const struct sk_buff *skb, int err)
{
	struct hop_event ev;
	struct hop_event *e = &ev;
	if (!sock_event(e, sk, HOP_KIND_RETRANS, HOP_HOOK_TCP_RETRANSMIT))
		return 0;
	e->sk_state = sk->__sk_common.skc_state;
	e->flags |= HOP_F_EGRESS;
	fill_tcp_state(e, sk);
	e->pkt.aux[2] = (__u32)err; /* snd_una is implied by seq; the error matters more */
	if (skb) {
		/* The segment's sequence range lives in the TCP control block. */
		const struct tcp_skb_cb *cb = (const struct tcp_skb_cb *)skb->cb;
		__u32 seq = BPF_CORE_READ(cb, seq);
		__u32 end = BPF_CORE_READ(cb, end_seq);
		__u8 flags = BPF_CORE_READ(cb, tcp_flags);
		e->skb_id = (__u64)skb;
		e->pkt.seq = seq;
		e->pkt.ack = e->pkt.aux[1]; /* rcv_nxt: what the retransmission acknowledges */
		e->tcp_flags = flags;
		__u32 len = end - seq - ((flags & 0x02) ? 1 : 0) - ((flags & 0x01) ? 1 : 0);
		e->payload_len = len > 0xffff ? 0xffff : len;
	}
	hop_emit(e);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(hop_inet_sock_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	/* The tracepoint also fires for SCTP and MPTCP, whose states are not TCP's. */
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	struct hop_event ev;
	struct hop_event *e = &ev;
	if (!sock_event(e, sk, HOP_KIND_SOCK_STATE, HOP_HOOK_SOCK_SET_STATE))
		return 0;
	e->reason = oldstate;
	e->sk_state = newstate;
	hop_emit(e);
	return 0;
}
