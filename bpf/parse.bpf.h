/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Static inline helpers that read kernel objects (skb, net_device, sock,
 * nf_conn) into a struct hop_event. No maps, no programs (one .rodata knob,
 * hop_btf_nf_conn): the including *.bpf.c decides what to filter and where to emit.
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

/*
 * Memory reached through an integer (packet headers at skb->head + offset, the
 * nf_conn in skb->_nfct: hop_ct_read_tuple) is read through bpf_rdonly_cast (kernel >= 6.2): the cast
 * gives an untrusted pointer of the named kernel type, and the verifier turns each
 * load through it into a fault-safe load (a faulting address reads as 0), so a
 * struct costs a few loads instead of a bpf_probe_read_kernel call (~40 ns each
 * here). Each load takes one whole field (or part of an array field): the verifier
 * checks loads against the type's BTF layout.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define hop_cast(type, p) ((const type *)bpf_rdonly_cast((const void *)(p), bpf_core_type_id_kernel(type)))

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
	/* dev->name is a char array in a BTF-typed struct: two direct loads, no helper call */
	__u64 n[2] = { *(const __u64 *)&dev->name[0], *(const __u64 *)&dev->name[8] };
	__builtin_memcpy(e->pkt.ifname, n, sizeof(n));
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
 * Where the kernel's own BTF has struct nf_conn (conntrack built in), the agent puts
 * its type id here before load and entries are read in place (hop_cast); where
 * conntrack is a module its types are in the module's BTF, which bpf_rdonly_cast
 * cannot name, so they are copied out with bpf_probe_read_kernel. (A CO-RE type-id
 * relocation cannot give the id: vmlinux also has the flavour nf_conn___init.)
 */
const volatile __u64 hop_btf_nf_conn = 0;

/* IPS_* status bits of a conntrack entry. */
static __always_inline __u32 hop_ct_status(const struct nf_conn *ct)
{
	if (hop_btf_nf_conn)
		return ((const struct nf_conn *)bpf_rdonly_cast(ct, hop_btf_nf_conn))->status;
	return BPF_CORE_READ(ct, status);
}

/* One direction's tuple of a conntrack entry (0 original, 1 reply) into out. */
static __always_inline void hop_ct_read_tuple(struct nf_conntrack_tuple *out, const struct nf_conn *ct, int dir)
{
	if (!hop_btf_nf_conn) {
		bpf_probe_read_kernel(out, sizeof(*out), &ct->tuplehash[dir & 1].tuple);
		return;
	}
	const struct nf_conn *c = bpf_rdonly_cast(ct, hop_btf_nf_conn);
	const struct nf_conntrack_tuple *t = dir ? &c->tuplehash[1].tuple : &c->tuplehash[0].tuple;
	const __u64 *src = (const __u64 *)&t->src.u3, *dst = (const __u64 *)&t->dst.u3;
	__u64 a[4] = { src[0], src[1], dst[0], dst[1] };
	__builtin_memcpy(&out->src.u3, &a[0], 16);
	__builtin_memcpy(&out->dst.u3, &a[2], 16);
	out->src.u.all = t->src.u.all;
	out->dst.u.all = t->dst.u.all;
	out->src.l3num = t->src.l3num;
	out->dst.protonum = t->dst.protonum;
}

static __always_inline void hop_ct_tuple(struct hop_tuple *t, const struct nf_conntrack_tuple *tup)
{
	__builtin_memcpy(t->saddr, &tup->src.u3, 16);
	__builtin_memcpy(t->daddr, &tup->dst.u3, 16);
	t->sport = bpf_ntohs(tup->src.u.all);
	t->dport = bpf_ntohs(tup->dst.u.all);
}

/* A KIND_CT record from an entry's tuples: original in e->tuple, reply in e->ct.reply. */
static __always_inline void hop_fill_ct_record(struct hop_event *e, const struct nf_conntrack_tuple *orig,
					       const struct nf_conntrack_tuple *reply)
{
	e->kind = HOP_KIND_CT;
	e->family = orig->src.l3num;
	e->l4proto = orig->dst.protonum;
	hop_ct_tuple(&e->tuple, orig);
	hop_ct_tuple(&e->ct.reply, reply);
	if (e->family == HOP_AF_INET) {
		/* nf_inet_addr keeps IPv4 in the first word; the rest is not guaranteed zero */
		__builtin_memset(e->tuple.saddr + 4, 0, 12);
		__builtin_memset(e->tuple.daddr + 4, 0, 12);
		__builtin_memset(e->ct.reply.saddr + 4, 0, 12);
		__builtin_memset(e->ct.reply.daddr + 4, 0, 12);
	}
}

/* The CT record (into e) of the entry with tuples orig and reply that packet record pkt
 * carries: at pkt's time, skb, place and conntrack state. */
static __always_inline void hop_ct_record_for(struct hop_event *e, const struct hop_event *pkt,
					      const struct nf_conntrack_tuple *orig,
					      const struct nf_conntrack_tuple *reply)
{
	__builtin_memset(e, 0, sizeof(*e));
	hop_fill_ct_record(e, orig, reply);
	e->ts_ns = pkt->ts_ns;
	e->skb_id = pkt->skb_id;
	e->netns_ino = pkt->netns_ino;
	e->ifindex = pkt->ifindex;
	e->hook = pkt->hook;
	e->ct_id = pkt->ct_id;
	e->ct_status = pkt->ct_status;
	e->ct_info = pkt->ct_info;
	e->flags = HOP_F_CT | (pkt->flags & (HOP_F_INGRESS | HOP_F_EGRESS));
}

/* Fingerprint of an entry's tuples: detects reuse of an nf_conn address (a new
 * connection) and a NAT mapping that changed after the entry was first seen. */
static __always_inline __u32 hop_ct_fingerprint(const struct nf_conntrack_tuple *o, const struct nf_conntrack_tuple *r)
{
	__u32 h = ((__u32)o->src.u.all << 16 | o->dst.u.all) ^ o->dst.protonum;
	h ^= o->src.u3.all[0] * 0x9e3779b1u;
	h ^= o->dst.u3.all[0] * 0x85ebca6bu;
	h ^= ((__u32)r->src.u.all << 16 | r->dst.u.all) * 0xc2b2ae35u;
	h ^= r->src.u3.all[0] * 0x27d4eb2fu;
	return h;
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
	__u32 status = hop_ct_status(ct);
	if (status & HOP_IPS_TEMPLATE) /* raw-table template: conntrack has not run yet */
		return NULL;
	e->flags |= HOP_F_CT;
	e->ct_id = hop_fold_ptr(ct);
	e->ct_status = status;
	e->ct_info = info;
	return ct;
}

/* Headers are read in place (hop_cast). The skb's head buffer always extends past
 * them (tailroom, then skb_shared_info), so what lies past a short packet's end is
 * readable and never used unless its headers say it is there. */

/* TCP/UDP header at l4 into e; l4len = bytes of L4 header + payload. */
static __always_inline void hop_parse_l4(struct hop_event *e, const unsigned char *l4, __u32 l4len)
{
	if (e->l4proto == IPPROTO_TCP) {
		const struct tcphdr *th = hop_cast(struct tcphdr, l4);
		const __u8 *b = (const __u8 *)th;
		e->tuple.sport = bpf_ntohs(th->source);
		e->tuple.dport = bpf_ntohs(th->dest);
		e->pkt.seq = bpf_ntohl(th->seq);
		e->pkt.ack = bpf_ntohl(th->ack_seq);
		e->pkt.window = bpf_ntohs(th->window);
		e->tcp_flags = b[13];
		__u32 doff = (b[12] >> 4) * 4;
		e->payload_len = l4len > doff ? l4len - doff : 0;
	} else if (e->l4proto == IPPROTO_UDP) {
		const struct udphdr *uh = hop_cast(struct udphdr, l4);
		e->tuple.sport = bpf_ntohs(uh->source);
		e->tuple.dport = bpf_ntohs(uh->dest);
		e->payload_len = l4len > 8 ? l4len - 8 : 0;
	} else {
		e->payload_len = l4len;
	}
}

/*
 * IPv4/IPv6 header at nh and the L4 header after it into e.
 * l3len: bytes from nh to the end of the skb, used when the IP length field is
 * 0 (BIG TCP). A non-first fragment has no L4 header: ports stay 0.
 */
static __always_inline int hop_parse_l3(struct hop_event *e, const unsigned char *nh, __u32 l3len)
{
	const struct iphdr *ip = hop_cast(struct iphdr, nh);
	__u8 vihl = *(const __u8 *)ip;
	if ((vihl >> 4) == 4) {
		__u32 ihl = (vihl & 0xf) * 4;
		__u32 tot = bpf_ntohs(ip->tot_len);
		if (!tot)
			tot = l3len;
		e->family = HOP_AF_INET;
		e->l4proto = ip->protocol;
		e->ip_id = bpf_ntohs(ip->id);
		__u32 s = ip->saddr, d = ip->daddr;
		__builtin_memcpy(e->tuple.saddr, &s, 4);
		__builtin_memcpy(e->tuple.daddr, &d, 4);
		if (bpf_ntohs(ip->frag_off) & 0x1fff)
			return HOP_PARSE_OK;
		hop_parse_l4(e, nh + ihl, tot > ihl ? tot - ihl : 0);
		return HOP_PARSE_OK;
	}
	if ((vihl >> 4) != 6)
		return HOP_PARSE_NOT_IP;

	const struct ipv6hdr *ip6 = hop_cast(struct ipv6hdr, nh);
	e->family = HOP_AF_INET6;
	const __u64 *s6 = (const __u64 *)&ip6->saddr, *d6 = (const __u64 *)&ip6->daddr;
	__u64 a[4] = { s6[0], s6[1], d6[0], d6[1] };
	__builtin_memcpy(e->tuple.saddr, &a[0], 16);
	__builtin_memcpy(e->tuple.daddr, &a[2], 16);
	__u32 plen = bpf_ntohs(ip6->payload_len);
	if (!plen && l3len > 40)
		plen = l3len - 40;
	__u8 next = ip6->nexthdr;
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
	hop_parse_l4(e, nh + off, plen > hdrs ? plen - hdrs : 0);
	return HOP_PARSE_OK;
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

/*
 * What tells one TCP segment from another along a node's path, whatever NAT and routing
 * do to it on the way: the IP length and id (IPv4) or payload length and flow label
 * (IPv6), and the TCP sequence number. 0 (nothing to tell it by) for anything but a
 * whole TCP segment right after the IP header.
 */
static __always_inline __u64 hop_segment_fp(const unsigned char *nh)
{
	if (!nh)
		return 0;
	const struct iphdr *ip = hop_cast(struct iphdr, nh);
	__u8 vihl = *(const __u8 *)ip;
	__u64 head;
	__u32 off;
	if ((vihl >> 4) == 4) {
		if (ip->protocol != IPPROTO_TCP || (bpf_ntohs(ip->frag_off) & 0x3fff))
			return 0;
		head = (__u64)ip->tot_len << 48 | (__u64)ip->id << 32;
		off = (vihl & 0xf) * 4;
	} else if ((vihl >> 4) == 6) {
		const struct ipv6hdr *ip6 = hop_cast(struct ipv6hdr, nh);
		if (ip6->nexthdr != IPPROTO_TCP)
			return 0;
		__u32 label = (__u32)(ip6->flow_lbl[0] & 0xf) << 16 | (__u32)ip6->flow_lbl[1] << 8 | ip6->flow_lbl[2];
		head = (__u64)ip6->payload_len << 48 | (__u64)label << 28 | 1ULL << 27;
		off = 40;
	} else {
		return 0;
	}
	const struct tcphdr *th = hop_cast(struct tcphdr, nh + off);
	return head ^ th->seq;
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
