/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Static inline helpers that read kernel objects (skb, net_device, sock,
 * nf_conn) into a struct hop_event. No maps, no programs: the including
 * *.bpf.c decides what to filter and where to emit.
 *
 * Include after vmlinux.h, bpf_helpers.h, bpf_core_read.h, bpf_endian.h and
 * events.h. All reads go through CO-RE relocations, so one object works on any
 * kernel whose BTF has the fields (missing optional fields are probed with
 * bpf_core_field_exists and simply leave the record field zero).
 *
 * Every program is tp_btf, so structs reached through BTF-typed pointers (the
 * tracepoint's skb, its dev, sk, net) are read directly: the verifier makes each
 * such load fault-safe in place, where BPF_CORE_READ costs one
 * bpf_probe_read_kernel call per hop (~40 ns each on the dev VM; `npm run
 * bench:live -- --sections kernel`). Packet bytes, and structs reached through
 * integers (nf_conn from _nfct, dst from _skb_refdst), still need the helper.
 */
#ifndef HOPTRACE_PARSE_BPF_H
#define HOPTRACE_PARSE_BPF_H

#define HOP_AF_INET 2
#define HOP_AF_INET6 10
#define HOP_ETH_P_IP 0x0800
#define HOP_ETH_P_IPV6 0x86DD
#define HOP_IPPROTO_ICMPV6 58
#define HOP_NFCT_INFOMASK 7UL
#define HOP_IP_CT_UNTRACKED 7
#define HOP_IPS_TEMPLATE (1 << 11)
#define HOP_HDR_UNSET 0xffff /* skb->*_header when never set */
#define HOP_RTN_LOCAL 2
#define HOP_RTF_LOCAL 0x80000000U
#define HOP_SKB_DST_NOREF 1UL

enum hop_parse_result {
	HOP_PARSE_OK = 0,
	HOP_PARSE_NOT_IP = 1,
	HOP_PARSE_TRUNCATED = 2,
};

/* Network namespace inode of a device or socket; 0 when unknown. */
static __always_inline __u32 hop_dev_netns(const struct net_device *dev)
{
	return dev ? dev->nd_net.net->ns.inum : 0;
}

static __always_inline __u32 hop_sk_netns(const struct sock *sk)
{
	return sk ? sk->__sk_common.skc_net.net->ns.inum : 0;
}

/* The namespace an skb is in: its device's, else its socket's. */
static __always_inline __u32 hop_skb_netns(const struct sk_buff *skb)
{
	const struct net_device *dev = skb->dev;
	if (dev)
		return hop_dev_netns(dev);
	return hop_sk_netns(skb->sk);
}

static __always_inline void hop_fill_dev(struct hop_event *e, const struct net_device *dev)
{
	if (!dev)
		return;
	e->ifindex = dev->ifindex;
	bpf_probe_read_kernel(e->pkt.ifname, sizeof(e->pkt.ifname), dev->name);
}

/* Conntrack is in use in a namespace iff something took a defrag reference
 * (nf_ct_netns_get does, for every rule that needs conntrack or NAT). Without
 * it, an skb with no entry is normal, not INVALID. */
static __always_inline bool hop_netns_uses_ct(const struct net *net, __u8 family)
{
	if (!net || !bpf_core_field_exists(net->nf.defrag_ipv4_users))
		return false;
	if (family == HOP_AF_INET6)
		return net->nf.defrag_ipv6_users > 0;
	return net->nf.defrag_ipv4_users > 0;
}

static __always_inline const struct net *hop_skb_net(const struct sk_buff *skb)
{
	const struct net_device *dev = skb->dev;
	if (dev)
		return dev->nd_net.net;
	const struct sock *sk = skb->sk;
	return sk ? sk->__sk_common.skc_net.net : NULL;
}

static __always_inline __u32 hop_fold_ptr(const void *p)
{
	__u64 v = (__u64)p;
	return (__u32)(v ^ (v >> 32));
}

/*
 * Conntrack state of an skb into e (ct_id, ct_status, ct_info, flags).
 * post_ct: conntrack has already run for this skb at this hook (egress after
 * POSTROUTING, or local delivery after INPUT), so "no entry" means INVALID.
 * Returns the entry, or NULL (untracked, template or none).
 */
static __always_inline struct nf_conn *hop_fill_ct(struct hop_event *e, const struct sk_buff *skb,
						    bool post_ct)
{
	if (!bpf_core_field_exists(skb->_nfct))
		return NULL;
	unsigned long nfct = skb->_nfct;
	__u8 info = nfct & HOP_NFCT_INFOMASK;
	struct nf_conn *ct = (struct nf_conn *)(nfct & ~HOP_NFCT_INFOMASK);

	if (!ct) {
		if (info == HOP_IP_CT_UNTRACKED)
			e->flags |= HOP_F_CT_UNTRACKED;
		else if (post_ct && (e->l4proto == IPPROTO_TCP || e->l4proto == IPPROTO_UDP) &&
			 hop_netns_uses_ct(hop_skb_net(skb), e->family))
			e->flags |= HOP_F_CT_MISSING;
		return NULL;
	}
	__u32 status = BPF_CORE_READ(ct, status);
	if (status & HOP_IPS_TEMPLATE) /* raw-table template: conntrack has not run yet */
		return NULL;
	e->flags |= HOP_F_CT;
	e->ct_id = hop_fold_ptr(ct);
	e->ct_status = status;
	e->ct_info = info;
	return ct;
}

static __always_inline void hop_ct_tuple(struct hop_tuple *t, const struct nf_conn *ct, int dir)
{
	struct nf_conntrack_tuple tup;
	bpf_probe_read_kernel(&tup, sizeof(tup), &ct->tuplehash[dir & 1].tuple);
	__builtin_memcpy(t->saddr, &tup.src.u3, 16);
	__builtin_memcpy(t->daddr, &tup.dst.u3, 16);
	t->sport = bpf_ntohs(tup.src.u.all);
	t->dport = bpf_ntohs(tup.dst.u.all);
}

/* A KIND_CT record for ct: original tuple in e->tuple, reply in e->ct.reply. */
static __always_inline void hop_fill_ct_record(struct hop_event *e, const struct nf_conn *ct)
{
	e->kind = HOP_KIND_CT;
	e->family = BPF_CORE_READ(ct, tuplehash[0].tuple.src.l3num);
	e->l4proto = BPF_CORE_READ(ct, tuplehash[0].tuple.dst.protonum);
	hop_ct_tuple(&e->tuple, ct, 0);
	hop_ct_tuple(&e->ct.reply, ct, 1);
	if (e->family == HOP_AF_INET) {
		/* nf_inet_addr keeps IPv4 in the first word; the rest is not guaranteed zero */
		__builtin_memset(e->tuple.saddr + 4, 0, 12);
		__builtin_memset(e->tuple.daddr + 4, 0, 12);
		__builtin_memset(e->ct.reply.saddr + 4, 0, 12);
		__builtin_memset(e->ct.reply.daddr + 4, 0, 12);
	}
}

/* Fingerprint of a CT record's tuples: detects reuse of an nf_conn address. */
static __always_inline __u32 hop_ct_fingerprint(const struct hop_event *e)
{
	__u32 h = ((__u32)e->tuple.sport << 16 | e->tuple.dport) ^ e->l4proto;
	h ^= *(const __u32 *)e->tuple.saddr * 0x9e3779b1u;
	h ^= *(const __u32 *)e->tuple.daddr * 0x85ebca6bu;
	h ^= ((__u32)e->ct.reply.sport << 16 | e->ct.reply.dport) * 0xc2b2ae35u;
	return h;
}

/* Bytes read at the network header in one go: IPv4 without options or IPv6
 * without extension headers, then a TCP header. The skb's head buffer always
 * extends past them (tailroom, then skb_shared_info), so the read does not
 * fault; what lies past the packet's end is never used unless its headers say
 * it is there. */
#define HOP_HDR_READ 60

static __always_inline void hop_tcp_into(struct hop_event *e, const struct tcphdr *th, __u32 l4len)
{
	e->tuple.sport = bpf_ntohs(th->source);
	e->tuple.dport = bpf_ntohs(th->dest);
	e->pkt.seq = bpf_ntohl(th->seq);
	e->pkt.ack = bpf_ntohl(th->ack_seq);
	e->pkt.window = bpf_ntohs(th->window);
	e->tcp_flags = ((const __u8 *)th)[13];
	__u32 doff = th->doff * 4;
	e->payload_len = l4len > doff ? l4len - doff : 0;
}

static __always_inline void hop_udp_into(struct hop_event *e, const struct udphdr *uh, __u32 l4len)
{
	e->tuple.sport = bpf_ntohs(uh->source);
	e->tuple.dport = bpf_ntohs(uh->dest);
	e->payload_len = l4len > 8 ? l4len - 8 : 0;
}

/*
 * `size` bytes of the L4 header at nh + off into dst. `h` holds `have` bytes already
 * read at nh: a header at the usual offset (20 for IPv4, 40 for IPv6) is taken from
 * there, anything else is read. Nonzero when the read fails.
 */
static __always_inline long hop_l4_header(void *dst, __u32 size, const __u8 *h, __u32 have, const unsigned char *nh,
					  __u32 off)
{
	if (off == 20 && have >= 20 + size) {
		__builtin_memcpy(dst, h + 20, size);
		return 0;
	}
	if (off == 40 && have >= 40 + size) {
		__builtin_memcpy(dst, h + 40, size);
		return 0;
	}
	return bpf_probe_read_kernel(dst, size, nh + off);
}

/* TCP/UDP header at nh + off into e; l4len = bytes of L4 header + payload. */
static __always_inline int hop_parse_l4(struct hop_event *e, const __u8 *h, __u32 have, const unsigned char *nh,
					__u32 off, __u32 l4len)
{
	if (e->l4proto == IPPROTO_TCP) {
		struct tcphdr th;
		if (hop_l4_header(&th, sizeof(th), h, have, nh, off))
			return HOP_PARSE_TRUNCATED;
		hop_tcp_into(e, &th, l4len);
	} else if (e->l4proto == IPPROTO_UDP) {
		struct udphdr uh;
		if (hop_l4_header(&uh, sizeof(uh), h, have, nh, off))
			return HOP_PARSE_TRUNCATED;
		hop_udp_into(e, &uh, l4len);
	} else {
		e->payload_len = l4len;
	}
	return HOP_PARSE_OK;
}

/*
 * IPv4/IPv6 header at nh and the L4 header after it into e.
 * l3len: bytes from nh to the end of the skb, used when the IP length field is
 * 0 (BIG TCP). A non-first fragment has no L4 header: ports stay 0.
 */
static __always_inline int hop_parse_l3(struct hop_event *e, const unsigned char *nh, __u32 l3len)
{
	__u8 h[HOP_HDR_READ] __attribute__((aligned(8)));
	__u32 have = sizeof(h);
	if (bpf_probe_read_kernel(h, sizeof(h), nh)) {
		have = sizeof(struct iphdr); /* a bad pointer, but try the least */
		if (bpf_probe_read_kernel(h, sizeof(struct iphdr), nh))
			return HOP_PARSE_TRUNCATED;
	}

	if ((h[0] >> 4) == 4) {
		struct iphdr ip;
		__builtin_memcpy(&ip, h, sizeof(ip));
		__u32 ihl = ip.ihl * 4;
		__u32 tot = bpf_ntohs(ip.tot_len);
		if (!tot)
			tot = l3len;
		e->family = HOP_AF_INET;
		e->l4proto = ip.protocol;
		e->ip_id = bpf_ntohs(ip.id);
		__builtin_memcpy(e->tuple.saddr, &ip.saddr, 4);
		__builtin_memcpy(e->tuple.daddr, &ip.daddr, 4);
		if (bpf_ntohs(ip.frag_off) & 0x1fff)
			return HOP_PARSE_OK;
		return hop_parse_l4(e, h, have, nh, ihl, tot > ihl ? tot - ihl : 0);
	}
	if ((h[0] >> 4) != 6)
		return HOP_PARSE_NOT_IP;

	struct ipv6hdr ip6;
	if (have >= sizeof(ip6))
		__builtin_memcpy(&ip6, h, sizeof(ip6));
	else if (bpf_probe_read_kernel(&ip6, sizeof(ip6), nh))
		return HOP_PARSE_TRUNCATED;
	e->family = HOP_AF_INET6;
	__builtin_memcpy(e->tuple.saddr, &ip6.saddr, 16);
	__builtin_memcpy(e->tuple.daddr, &ip6.daddr, 16);
	__u32 plen = bpf_ntohs(ip6.payload_len);
	if (!plen && l3len > 40)
		plen = l3len - 40;
	__u8 next = ip6.nexthdr;
	__u32 off = 40;
	/* Skip the usual extension headers; give up on anything longer. */
	for (int i = 0; i < 4; i++) {
		if (next != 0 && next != 43 && next != 60 && next != 44 && next != 51)
			break;
		__u8 ext[4];
		if (bpf_probe_read_kernel(ext, sizeof(ext), nh + off))
			return HOP_PARSE_TRUNCATED;
		__u32 len;
		if (next == 44) {
			if ((((__u16)ext[2] << 8 | ext[3]) & 0xfff8) != 0) { /* not the first fragment */
				e->l4proto = ext[0];
				return HOP_PARSE_OK;
			}
			len = 8;
		} else if (next == 51) {
			len = ((__u32)ext[1] + 2) * 4;
		} else {
			len = ((__u32)ext[1] + 1) * 8;
		}
		next = ext[0];
		off += len;
	}
	e->l4proto = next;
	__u32 hdrs = off - 40;
	return hop_parse_l4(e, h, have, nh, off, plen > hdrs ? plen - hdrs : 0);
}

/* Socket tuple as local -> remote. IPv4-mapped IPv6 sockets are reported as
 * IPv4, so that they match the IPv4 packets they send. */
static __always_inline void hop_fill_sk_tuple(struct hop_event *e, const struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->l4proto = BPF_CORE_READ(sk, sk_protocol);
	e->tuple.sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->tuple.dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == HOP_AF_INET6) {
		struct in6_addr s, d;
		BPF_CORE_READ_INTO(&s, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&d, sk, __sk_common.skc_v6_daddr);
		bool mapped = s.in6_u.u6_addr32[0] == 0 && s.in6_u.u6_addr32[1] == 0 &&
			      s.in6_u.u6_addr32[2] == bpf_htonl(0xffff);
		if (!mapped) {
			e->family = HOP_AF_INET6;
			__builtin_memcpy(e->tuple.saddr, &s, 16);
			__builtin_memcpy(e->tuple.daddr, &d, 16);
			return;
		}
	}
	e->family = HOP_AF_INET;
	__be32 s4 = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
	__be32 d4 = BPF_CORE_READ(sk, __sk_common.skc_daddr);
	__builtin_memcpy(e->tuple.saddr, &s4, 4);
	__builtin_memcpy(e->tuple.daddr, &d4, 4);
}

/* TIME_WAIT and NEW_SYN_RECV sockets are mini sockets, not tcp_sock. */
static __always_inline bool hop_is_full_tcp_sock(__u8 state)
{
	return state != 0 && state != 6 /* TIME_WAIT */ && state != 12 /* NEW_SYN_RECV */;
}

static __always_inline void hop_swap_tuple(struct hop_tuple *t)
{
	struct hop_tuple o = *t;
	__builtin_memcpy(t->saddr, o.daddr, 16);
	__builtin_memcpy(t->daddr, o.saddr, 16);
	t->sport = o.dport;
	t->dport = o.sport;
}

/* Start of the network header of an skb, or NULL when it was never set. */
static __always_inline const unsigned char *hop_skb_nh(const struct sk_buff *skb)
{
	__u16 nh = skb->network_header;
	if (nh == HOP_HDR_UNSET)
		return NULL;
	return skb->head + nh;
}

/* Bytes from nh to the end of the linear-plus-paged skb data. */
static __always_inline __u32 hop_skb_l3len(const struct sk_buff *skb, const unsigned char *nh)
{
	const unsigned char *data = skb->data;
	__u32 len = skb->len;
	__u32 before = nh > data ? nh - data : 0;
	return len > before ? len - before : 0;
}

/* enum hop_stage of an skb: received or local, routed or not, to where. */
static __always_inline __u8 hop_skb_stage(const struct sk_buff *skb, bool received, __u8 family)
{
	unsigned long refdst = skb->_skb_refdst;
	const struct dst_entry *dst = (const struct dst_entry *)(refdst & ~HOP_SKB_DST_NOREF);
	if (!received)
		return skb->dev ? HOP_STAGE_POSTROUTING : HOP_STAGE_OUTPUT;
	if (!dst)
		return HOP_STAGE_PREROUTING;
	bool local;
	if (family == HOP_AF_INET6)
		local = BPF_CORE_READ((const struct rt6_info *)dst, rt6i_flags) & HOP_RTF_LOCAL;
	else
		local = BPF_CORE_READ((const struct rtable *)dst, rt_type) == HOP_RTN_LOCAL;
	return local ? HOP_STAGE_INPUT : HOP_STAGE_FORWARD;
}

#endif /* HOPTRACE_PARSE_BPF_H */
