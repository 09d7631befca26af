/**
 * Verdicts: why a flow was reset, dropped or retransmitting, from its joined events.
 * Pure, no I/O: the same events always give the same verdicts, so a verdict computed
 * again after late events arrive simply replaces the earlier one.
 *
 * Each verdict names the place (node, namespace/pod, interface, hook), the socket
 * state and the kernel's reason, the packet that triggered it, a chain of evidence
 * a person can check, and a fix where one is known.
 */
import { Flag, Kind, TcpState } from '../shared/record.js';
import { BENIGN_DROPS, buildPath, entering, fmt, hopLabel, labelOf, leaving, packetInstances, same, type FlowPath, type PacketInstance } from './path.js';
import { tcpFlagNames, tcpStateName, type Endpoint, type TimelineRow } from './timeline.js';

export type VerdictKind = 'nat_bypass_reset' | 'reset_no_socket' | 'reset_refused' | 'reset_app_abort' | 'reset_other' | 'reset_received' | 'drop' | 'retrans_burst';

export interface PacketRef {
  src: Endpoint;
  dst: Endpoint;
  seq: number;
  ack: number;
  flags: string;
  len: number;
}

export interface Verdict {
  kind: VerdictKind;
  /** Stable within the flow: the same incident judged again gets the same key. */
  key: string;
  tsNs: string;
  node: string;
  netns: string;
  pod: string;
  where: string;
  skState: string;
  reason: number;
  reasonName: string;
  trigger: PacketRef | null;
  /** One sentence. */
  title: string;
  /** The chain of evidence, in order. */
  evidence: string[];
  fix: string | null;
}

const SYN = 0x02;
const ACK = 0x10;
const RST = 0x04;
const IPS_DST_NAT = 1 << 5;

/** Retransmissions of one flow that make a burst worth a verdict. */
export const RETRANS_BURST = 3;

const src = (r: TimelineRow): Endpoint => ({ addr: r.saddr, port: r.sport });
const dst = (r: TimelineRow): Endpoint => ({ addr: r.daddr, port: r.dport });
/** An event's id as verdict keys name their trigger: `<prefix>:<agent>/<boot>/<seq>`. */
export const eventId = (r: TimelineRow) => `${r.agent}/${r.boot}/${r.seq}`;
const ts = (r: TimelineRow) => BigInt(r.wall_ts_ns);
const byTime = (a: TimelineRow, b: TimelineRow) => (ts(a) < ts(b) ? -1 : ts(a) > ts(b) ? 1 : 0);
const place = (r: TimelineRow) => `${r.node}${r.pod || r.netns ? `/${r.pod || r.netns}` : ''}`;
const stateOf = (r: TimelineRow) => tcpStateName(r.sk_state) || 'no socket';

/** What a reset reason means, for the kernel's sk_rst_reason names hoptrace tells apart. */
const ABORT_REASONS: Readonly<Record<string, string>> = {
  TCP_ABORT_ON_CLOSE: 'the application closed the socket with data still unread',
  TCP_ABORT_ON_LINGER: 'the application closed the socket with SO_LINGER set to 0',
  TCP_ABORT_ON_DATA: 'data arrived after the application had closed the socket',
  TCP_DISCONNECT_WITH_DATA: 'the application disconnected the socket with data unsent or unread',
  TCP_ABORT_ON_MEMORY: 'the kernel ran out of socket memory',
  TCP_KEEPALIVE_TIMEOUT: 'keepalive probes went unanswered',
};

/** What a drop reason means, where hoptrace can say more than the kernel's name. */
const DROP_MEANING: Readonly<Record<string, string>> = {
  NETFILTER_DROP: 'a netfilter (iptables/nftables) rule dropped it',
  IP_INNOROUTES: 'there was no route for it',
  IP_OUTNOROUTES: 'there was no route for it',
  QDISC_DROP: 'the queue of the device was full',
  FULL_RING: 'the device ring was full',
  TC_DROP: 'a tc filter dropped it',
  NEIGH_FAILED: 'the next hop did not answer ARP/ND',
  NEIGH_QUEUEFULL: 'too many packets waited for the next hop to resolve',
  TCP_INVALID_SEQUENCE: 'its sequence number was outside the receive window',
};

const STAGES = ['', 'PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'];

function packetRef(r: TimelineRow): PacketRef {
  return { src: src(r), dst: dst(r), seq: r.tcp_seq, ack: r.tcp_ack, flags: tcpFlagNames(r.tcp_flags), len: r.payload_len };
}

function describe(p: PacketRef): string {
  return `${fmt(p.src)} -> ${fmt(p.dst)} ${p.flags || 'no flags'} seq ${p.seq} ack ${p.ack} len ${p.len}`;
}

function base(r: TimelineRow, kind: VerdictKind, key: string): Omit<Verdict, 'title' | 'evidence' | 'fix' | 'trigger'> {
  return {
    kind,
    key,
    tsNs: String(r.wall_ts_ns),
    node: r.node,
    netns: r.netns,
    pod: r.pod,
    where: labelOf(r),
    skState: tcpStateName(r.sk_state),
    reason: r.reason,
    reasonName: r.reason_name ?? '',
  };
}

/** The conntrack entries of the flow: NAT they record, keyed by node. */
function natEntries(rows: TimelineRow[]) {
  return rows
    .filter((r) => r.kind === Kind.CT && r.reply_saddr)
    .map((r) => ({ r, origSrc: src(r), origDst: dst(r), replySrc: { addr: r.reply_saddr, port: r.reply_sport }, replyDst: { addr: r.reply_daddr, port: r.reply_dport } }))
    .filter((c) => !same(c.origDst, c.replySrc) || !same(c.origSrc, c.replyDst));
}

/** The client's next expected sequence number before `before`, from its packets in `rows` other than the trigger. */
function expectedSeq(rows: TimelineRow[], client: Endpoint, before: bigint, triggerSeq: number): number | null {
  let best: number | null = null;
  let bestAdv = -1;
  let base: number | null = null;
  for (const r of rows) {
    if (r.kind !== Kind.PACKET || ts(r) >= before || !same(src(r), client) || r.tcp_seq === triggerSeq) continue;
    const end = (r.tcp_seq + r.payload_len + (r.tcp_flags & SYN ? 1 : 0)) >>> 0;
    base ??= r.tcp_seq;
    const adv = (end - base) >>> 0;
    if (adv < 2 ** 31 && adv > bestAdv) {
      bestAdv = adv;
      best = end;
    }
  }
  return best;
}

function handshakeDone(rows: TimelineRow[], before: bigint): boolean {
  return rows.some((r) => r.kind === Kind.PACKET && (r.tcp_flags & (SYN | ACK)) === (SYN | ACK) && ts(r) < before);
}

function resetVerdict(rst: TimelineRow, rows: TimelineRow[], path: ReturnType<typeof buildPath>): Verdict | null {
  // tcp_send_reset records the tuple local -> remote; the packet that triggered it came the other way.
  const local = src(rst);
  const remote = dst(rst);
  const trigger: PacketRef = { src: remote, dst: local, seq: rst.tcp_seq, ack: rst.tcp_ack, flags: tcpFlagNames(rst.tcp_flags), len: rst.payload_len };
  const key = `${rst.kind}:${eventId(rst)}`;
  const established = handshakeDone(rows, ts(rst));
  const reasonName = rst.reason_name ?? '';
  const evidence: string[] = [];

  // NAT bypass: a listener answered a packet of an established connection whose destination
  // conntrack translates on this node: the packet went past NAT untranslated.
  const nats = natEntries(rows).filter((c) => c.r.node === rst.node && same(c.origDst, local));
  if (rst.sk_state === TcpState.LISTEN && established && nats.length) {
    const c = nats[0]!;
    const client = path.client ?? trigger.src;
    const want = expectedSeq(rows.filter((r) => r.node === rst.node), trigger.src, ts(rst), trigger.seq);
    const off = want === null ? null : ((trigger.seq - want) | 0);
    const invalidSeen = rows.some((r) => r.node === rst.node && (r.flags & Flag.CT_MISSING) !== 0 && ts(r) >= ts(rst) - 1_000_000_000n);
    const redirect = `${fmt(c.origDst)} -> ${fmt(c.replySrc)}`;
    evidence.push(
      `connection ${fmt(client)} -> ${fmt(path.paths.forward[0]?.dst ?? path.server ?? c.origDst)} was established (handshake seen)${path.paths.forward.some((h) => h.nat) ? `, NATed on its way: ${path.paths.forward.filter((h) => h.nat).map((h) => `${h.nat} at ${h.node}`).join('; ')}` : ''}`,
      `conntrack on ${place(c.r)} translates ${redirect} for it (${c.r.ct_status & IPS_DST_NAT ? 'DNAT/REDIRECT' : 'NAT'}), so its packets should reach ${fmt(c.replySrc)}`,
      `at ${place(rst)} a segment ${describe(trigger)} reached ${fmt(local)} untranslated${off !== null && Math.abs(off) > 65535 ? `: its sequence number is ${Math.abs(off)} bytes ${off > 0 ? 'ahead of' : 'behind'} what the client had sent (${want}), far outside the window` : ''}`,
      `conntrack marked it INVALID (out of window, with net.netfilter.nf_conntrack_tcp_be_liberal=0) and NAT skipped it${invalidSeen ? ' (the packets around it carried no conntrack entry)' : ''}`,
      `the LISTEN socket on ${fmt(local)} (the application's own listener) answered it with a RST (tcp_send_reset, state LISTEN${reasonName ? `, reason ${reasonName}` : ''})`,
      `the RST went back to the client on the connection: ${rows.some((r) => r.kind === Kind.RST_RECV) ? 'the client socket received it (tcp_receive_reset)' : 'the client saw the connection reset (ECONNRESET)'}`,
    );
    return {
      ...base(rst, 'nat_bypass_reset', key),
      trigger,
      title: `NAT bypass reset on ${place(rst)}: an out-of-window segment of the established connection skipped ${redirect} and hit the listener on ${fmt(local)}, which reset the connection`,
      evidence,
      fix: `drop INVALID packets before NAT in ${place(c.r)} (iptables -t mangle -I PREROUTING -p tcp -m conntrack --ctstate INVALID -j DROP), or set net.netfilter.nf_conntrack_tcp_be_liberal=1 there`,
    };
  }

  if (rst.sk_state === TcpState.UNSPECIFIED || reasonName === 'NO_SOCKET') {
    // A late segment after this side had closed (its FIN went out) finding no socket is
    // ordinary teardown, not an incident.
    const FIN = 0x01;
    if (rows.some((r) => r.kind === Kind.PACKET && r.tcp_flags & FIN && same(src(r), local) && ts(r) < ts(rst))) return null;
    const syn = (rst.tcp_flags & (SYN | ACK)) === SYN;
    if (syn || !established) {
      return {
        ...base(rst, 'reset_refused', key),
        trigger,
        title: `connection refused on ${place(rst)}: nothing listens on ${fmt(local)}`,
        evidence: [`a ${trigger.flags || 'segment'} from ${fmt(remote)} reached ${fmt(local)} at ${place(rst)}`, `no socket matched it, so the kernel answered with a RST (tcp_send_reset${reasonName ? `, reason ${reasonName}` : ''})`],
        fix: `start the service on ${fmt(local)}, or point the client at the right port`,
      };
    }
    return {
      ...base(rst, 'reset_no_socket', key),
      trigger,
      title: `reset on ${place(rst)}: a segment of an established connection found no socket on ${fmt(local)}`,
      evidence: [`the connection was established (handshake seen)`, `a segment ${describe(trigger)} reached ${place(rst)}`, `no socket matched it (the server side no longer had the connection: closed, restarted or never NATed back), so the kernel answered with a RST${reasonName ? ` (${reasonName})` : ''}`],
      fix: null,
    };
  }

  const abort = ABORT_REASONS[reasonName];
  if (abort) {
    return {
      ...base(rst, 'reset_app_abort', key),
      trigger: null,
      title: `application abort on ${place(rst)}: ${abort} (socket ${fmt(local)}, ${stateOf(rst)})`,
      evidence: [`the socket ${fmt(local)} -> ${fmt(remote)} was ${stateOf(rst)}`, `it sent a RST: tcp_send_reset with reason ${reasonName}`, `which means ${abort}`],
      fix: reasonName === 'TCP_ABORT_ON_CLOSE' ? 'read the request fully before closing, or shut down the write side and drain' : reasonName === 'TCP_ABORT_ON_LINGER' ? 'do not set SO_LINGER to 0 unless an abortive close is intended' : null,
    };
  }
  return {
    ...base(rst, 'reset_other', key),
    trigger,
    title: `reset sent on ${place(rst)} by ${fmt(local)} (${stateOf(rst)})${reasonName ? `: ${reasonName}` : ''}`,
    evidence: [`the socket ${fmt(local)} -> ${fmt(remote)} was ${stateOf(rst)}`, `a segment ${describe(trigger)} led it to send a RST${reasonName ? ` (reason ${reasonName})` : ''}`],
    fix: null,
  };
}

const lastSighting = (i: PacketInstance) => [...i.sightings].sort((a, b) => byTime(a.r, b.r)).at(-1)!.r;

/**
 * Where a retransmitted segment was lost. Last seen short of its direction's last hop: lost
 * after that place. Seen at the last hop: it arrived, and what went missing is the receiver's
 * acknowledgement (last seen where it was lost), or the receiver never sent one.
 */
function retransVerdict(retrans: TimelineRow[], rows: TimelineRow[], path: FlowPath): Verdict {
  const r = retrans[0]!;
  const seq = r.tcp_seq;
  const end = (seq + r.payload_len + (r.tcp_flags & SYN ? 1 : 0)) >>> 0;
  const instances = packetInstances(rows);
  // The retransmission record carries the resent segment's seq and length: find the original by both.
  const original = instances
    .filter((i) => i.sightings.some((s) => s.r.kind === Kind.PACKET && s.r.tcp_seq === seq && s.r.payload_len === r.payload_len && (s.r.tcp_flags & SYN) === (r.tcp_flags & SYN)))
    .sort((a, b) => byTime(a.sightings[0]!.r, b.sightings[0]!.r))[0];
  const last = original ? lastSighting(original) : undefined;
  const finalHop = original ? path.paths[original.dir].at(-1) : undefined;
  const arrived = last !== undefined && finalHop !== undefined && last.kind === Kind.PACKET && labelOf(last) === hopLabel(finalHop);
  const evidence = [`tcp_retransmit_skb fired ${retrans.length} times on ${place(r)} (first for seq ${seq})`];
  let title = `${retrans.length} retransmissions from ${fmt(src(r))}`;
  if (!last) {
    evidence.push(`the original segment seq ${seq} was not seen on any device hook`);
  } else if (!arrived) {
    title += `; the lost segment was last seen at ${labelOf(last)}`;
    evidence.push(`the original segment seq ${seq} was last seen at ${labelOf(last)} and nowhere after it`);
  } else {
    // The receiver's first packet back acknowledging the segment, after it arrived.
    const arrivedAt = ts(last);
    const ack = instances
      .filter((i) => i.dir !== original!.dir && i.sightings.some((x) => x.r.kind === Kind.PACKET && x.r.tcp_flags & ACK && ts(x.r) >= arrivedAt && ((x.r.tcp_ack - end) >>> 0) < 2 ** 31))
      .sort((a, b) => byTime(a.sightings[0]!.r, b.sightings[0]!.r))[0];
    evidence.push(`the original segment seq ${seq} reached ${labelOf(last)}, the last hop of its way`);
    if (!ack) {
      title += `; the segment reached ${place(last)}, which did not acknowledge it`;
      evidence.push(`no packet from ${place(last)} acknowledged it (ack ${end} or beyond) on any device hook`);
    } else {
      const ackLast = lastSighting(ack);
      // Back at the sender: entering the namespace the segment was first seen leaving.
      const sentFrom = [...original!.sightings].sort((x, y) => byTime(x.r, y.r))[0]!.r;
      const back = place(ackLast) === place(sentFrom) && entering(ackLast);
      const why = ackLast.reason_name || String(ackLast.reason);
      if (ackLast.kind === Kind.DROP) {
        title += `; the segment arrived, its acknowledgement was dropped at ${labelOf(ackLast)}: ${why}`;
        evidence.push(`its acknowledgement (ack ${ackLast.tcp_ack}) was dropped at ${labelOf(ackLast)} (kfree_skb, reason ${why}${ackLast.location ? `, in ${ackLast.location}` : ''})`);
      } else {
        title += back
          ? `; the segment and its acknowledgement both arrived (the sender resent it anyway: a timeout shorter than the round trip, or reordering taken for loss)`
          : `; the segment arrived, its acknowledgement was lost after ${labelOf(ackLast)}`;
        evidence.push(`its acknowledgement (ack ${ackLast.tcp_ack}) was last seen at ${labelOf(ackLast)}${back ? ', back at the sender' : ' and nowhere after it'}`);
      }
    }
  }
  return { ...base(r, 'retrans_burst', `retrans:${eventId(r)}`), trigger: packetRef(r), title, evidence, fix: null };
}

export function judgeFlow(rowsIn: readonly TimelineRow[]): Verdict[] {
  const rows = [...rowsIn].sort(byTime);
  const out: Verdict[] = [];
  const needsPath = rows.some((r) => r.kind === Kind.RST_SENT || r.kind === Kind.RETRANS);
  const path = needsPath ? buildPath(rows) : null;

  const sent = rows.filter((r) => r.kind === Kind.RST_SENT);
  // The packet that triggered a reset is usually also freed with a reason: part of that verdict, not a drop of its own;
  // and where the reset is ordinary teardown (no verdict), so is the drop of the segment that triggered it.
  const triggerDrops = new Set<TimelineRow>();
  for (const r of sent) {
    const v = resetVerdict(r, rows, path!);
    // tcp_send_reset carries the triggering segment's seq and length (resetVerdict's trigger)
    const freed = rows.find((d) => d.kind === Kind.DROP && d.node === r.node && d.tcp_seq === r.tcp_seq && d.payload_len === r.payload_len);
    if (freed) triggerDrops.add(freed);
    if (!v) continue;
    if (freed) v.evidence.push(`the kernel then freed the segment (kfree_skb, reason ${freed.reason_name || freed.reason}${freed.location ? `, in ${freed.location}` : ''})`);
    out.push(v);
  }

  // A reset received with no socket's reset in the flow: sent by a node's netfilter (first seen
  // leaving a watched namespace, never arriving there), or by a peer or middlebox not watched.
  if (!sent.length) {
    const recv = rows.find((r) => r.kind === Kind.RST_RECV);
    if (recv) {
      const rstPkt = rows.find((r) => r.kind === Kind.PACKET && r.tcp_flags & RST);
      const madeThere = rstPkt && leaving(rstPkt);
      const whence = !rstPkt
        ? ['the RST itself was not seen on any device hook', 'no node hoptrace watches sent it: the peer or a middlebox did']
        : madeThere
          ? [`the RST was first seen leaving ${place(rstPkt)} (${labelOf(rstPkt)}), and never arriving there`, `no socket there sent it (no tcp_send_reset): the kernel made it without one, as an iptables/nftables REJECT --reject-with tcp-reset does`]
          : [`the RST was first seen at ${labelOf(rstPkt)}`, 'no node hoptrace watches sent it: the peer or a middlebox did'];
      out.push({
        ...base(recv, 'reset_received', `${recv.kind}:${eventId(recv)}`),
        trigger: rstPkt ? packetRef(rstPkt) : null,
        title: `reset received on ${place(recv)} by ${fmt(src(recv))} from ${fmt(dst(recv))} (${stateOf(recv)}); ${madeThere ? `${place(rstPkt)} sent it without a socket (a firewall REJECT, most likely)` : 'no watched node sent it'}`,
        evidence: [`the socket ${fmt(src(recv))} -> ${fmt(dst(recv))} was ${stateOf(recv)} when a RST arrived (tcp_receive_reset)`, ...whence],
        fix: madeThere ? `find the rule: iptables-save | grep -i reject (or nft list ruleset) in ${place(rstPkt)}` : null,
      });
    }
  }

  // Drops, grouped by place and reason.
  const drops = new Map<string, TimelineRow[]>();
  for (const r of rows) {
    if (r.kind !== Kind.DROP || BENIGN_DROPS.has(r.reason_name ?? '') || triggerDrops.has(r)) continue;
    const k = `${r.node}|${r.netns_ino}|${r.ifname}|${r.reason}|${r.location ?? ''}|${r.aux2 ?? 0}`;
    let l = drops.get(k);
    if (!l) drops.set(k, (l = []));
    l.push(r);
  }
  for (const list of drops.values()) {
    const r = list[0]!;
    const name = r.reason_name || `reason ${r.reason}`;
    const stage = STAGES[r.aux2 ?? 0] ?? '';
    const at = `${place(r)}${r.ifname ? ` ${r.ifname}` : ''}${stage ? ` ${stage}` : ''}`;
    out.push({
      ...base(r, 'drop', `drop:${eventId(r)}`),
      trigger: packetRef(r),
      title: `${list.length} packet${list.length > 1 ? 's' : ''} dropped at ${at}: ${name}${DROP_MEANING[r.reason_name ?? ''] ? ` (${DROP_MEANING[r.reason_name!]})` : ''}`,
      evidence: [
        `skb:kfree_skb on ${place(r)} with reason ${name}${r.location ? `, freed in ${r.location}` : ''}${stage ? `, at ${stage}` : ''}`,
        `first dropped packet: ${describe(packetRef(r))}`,
        ...(list.length > 1 ? [`${list.length} drops in all, last at ${String(list.at(-1)!.wall_ts_ns)} ns`] : []),
      ],
      fix: r.reason_name === 'NETFILTER_DROP' ? `find the rule: iptables-save (or nft list ruleset) in ${place(r)}${stage ? `, chain ${stage}` : ''}` : null,
    });
  }

  // Retransmission bursts, and where the lost packet was last seen.
  const retrans = rows.filter((r) => r.kind === Kind.RETRANS);
  if (retrans.length >= RETRANS_BURST) out.push(retransVerdict(retrans, rows, path!));
  return out;
}

/** Flows worth judging: they have a reset, a drop that is not the stack's normal work, or retransmissions. */
export function isAnomaly(r: { kind: number; reason_name?: string }): boolean {
  if (r.kind === Kind.DROP) return !BENIGN_DROPS.has(r.reason_name ?? '');
  return r.kind === Kind.RST_SENT || r.kind === Kind.RST_RECV || r.kind === Kind.RETRANS;
}

/** The same test in SQL, over hop_events columns. */
export const ANOMALY_SQL = `(kind IN (${Kind.RST_SENT}, ${Kind.RST_RECV}, ${Kind.RETRANS}) OR (kind = ${Kind.DROP} AND reason_name NOT IN (${[...BENIGN_DROPS].map((n) => `'${n}'`).join(', ')})))`;
