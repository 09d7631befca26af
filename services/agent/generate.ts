/**
 * Deterministic generator of multi-node recordings: TCP flows from client pods on
 * node-a through a router node-b to server pods on node-c, each packet seen at six
 * hooks (pod egress and host egress on node-a, ingress and egress on node-b, host
 * ingress and pod ingress on node-c), replies the other way. A few flows end in a
 * reset from the server. Each node gets its own file, its own monotonic clock and
 * its own clock offset, as real agents would record.
 *
 * Exactly `events` records are written across the files (the last flow is cut).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AF_INET, encodeRecord, Flag, Hook, Kind, RECORD_SIZE, TcpState, type HookValue } from '../shared/record.js';
import { encodeHeader } from '../shared/recording.js';

export interface GenerateOptions {
  outDir: string;
  events: number;
  seed?: number;
  /** Wall-clock start of the recording, Unix ms. */
  startMs?: number;
  /** New flows per second of recorded time. */
  flowsPerSecond?: number;
  /** Records to corrupt (abi_version byte) in node-b's file, for tests of corrupt-record handling. */
  corrupt?: number;
}

export interface GenerateResult {
  files: string[];
  events: number;
  flows: number;
  corruptOffsets: { file: string; offset: number }[];
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface NodeSpec {
  name: string;
  boot: number;
  /** Kernel monotonic clock at recording start, ns. */
  monoStart: number;
  netns: { pod: number; host: number };
}

const NODES: NodeSpec[] = [
  { name: 'node-a', boot: 0xa11ce, monoStart: 1_000e9, netns: { pod: 4026532101, host: 4026531840 } },
  { name: 'node-b', boot: 0xb0b, monoStart: 5_000e9, netns: { pod: 0, host: 4026531841 } },
  { name: 'node-c', boot: 0xca401, monoStart: 20_000e9, netns: { pod: 4026532301, host: 4026531842 } },
];

/** The six places a client->server packet is seen, in order; replies see them reversed. */
const PATH: { node: number; netns: 'pod' | 'host'; ifname: string; ifindex: number; hook: HookValue; egress: boolean }[] = [
  { node: 0, netns: 'pod', ifname: 'eth0', ifindex: 2, hook: Hook.NET_DEV_QUEUE, egress: true },
  { node: 0, netns: 'host', ifname: 'eth1', ifindex: 3, hook: Hook.NET_DEV_QUEUE, egress: true },
  { node: 1, netns: 'host', ifname: 'eth0', ifindex: 2, hook: Hook.NETIF_RECEIVE, egress: false },
  { node: 1, netns: 'host', ifname: 'eth1', ifindex: 3, hook: Hook.NET_DEV_QUEUE, egress: true },
  { node: 2, netns: 'host', ifname: 'eth0', ifindex: 2, hook: Hook.NETIF_RECEIVE, egress: false },
  { node: 2, netns: 'pod', ifname: 'eth0', ifindex: 2, hook: Hook.NETIF_RECEIVE, egress: false },
];
/** For replies: ingress where requests egress and vice versa. */
const REPLY_HOOK = (egress: boolean): HookValue => (egress ? Hook.NETIF_RECEIVE : Hook.NET_DEV_QUEUE);

const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const PSH = 0x08;
const ACK = 0x10;

/** Growing per-node record store, sorted by timestamp before writing. */
class NodeLog {
  buf = Buffer.alloc(1 << 20);
  ts: number[] = [];
  get count() {
    return this.ts.length;
  }
  slot(ts: number): number {
    const off = this.count * RECORD_SIZE;
    if (off + RECORD_SIZE > this.buf.length) {
      const bigger = Buffer.alloc(this.buf.length * 2);
      this.buf.copy(bigger);
      this.buf = bigger;
    }
    this.ts.push(ts);
    return off;
  }
  sorted(): Buffer {
    const idx = this.ts.map((_, i) => i).sort((a, b) => this.ts[a]! - this.ts[b]! || a - b);
    const out = Buffer.alloc(this.count * RECORD_SIZE);
    idx.forEach((src, dst) => this.buf.copy(out, dst * RECORD_SIZE, src * RECORD_SIZE, (src + 1) * RECORD_SIZE));
    return out;
  }
}

export async function generateRecording(o: GenerateOptions): Promise<GenerateResult> {
  const rnd = mulberry32(o.seed ?? 1);
  const startMs = o.startMs ?? Date.UTC(2026, 10, 1, 12, 0, 0);
  const flowGapNs = 1e9 / (o.flowsPerSecond ?? 2_000);
  const logs = NODES.map(() => new NodeLog());
  let total = 0;
  let flows = 0;
  let skb = 0x1000n;

  const emit = (node: number, relNs: number, fill: (ts: bigint) => Parameters<typeof encodeRecord>[0]) => {
    if (total >= o.events) return false;
    const spec = NODES[node]!;
    const mono = spec.monoStart + relNs;
    const off = logs[node]!.slot(mono);
    encodeRecord(fill(BigInt(Math.round(mono))), logs[node]!.buf, off);
    total++;
    return true;
  };

  for (let f = 0; total < o.events; f++) {
    flows++;
    const client = `10.1.${(f >> 8) & 0xff}.${(f & 0xff) + 1}`;
    const server = `10.3.0.${(f % 4) + 10}`;
    const cport = 20_000 + (f % 40_000);
    const sport = 8080;
    let t = f * flowGapNs + rnd() * flowGapNs;
    let cseq = Math.floor(rnd() * 0xffffffff);
    let sseq = Math.floor(rnd() * 0xffffffff);
    // What a live kernel stamps on each packet (HOP_F_CONN): the ISNs, the server's from the SYN-ACK on.
    const isnC = cseq;
    const isnS = sseq;
    const reset = rnd() < 0.01;
    const exchanges = 1 + Math.floor(rnd() * 4);
    // Packets as (from client?, flags, payload length).
    const pkts: [boolean, number, number][] = [[true, SYN, 0], [false, SYN | ACK, 0], [true, ACK, 0]];
    for (let e = 0; e < exchanges; e++) {
      pkts.push([true, PSH | ACK, 64 + Math.floor(rnd() * 900)], [false, ACK, 0], [false, PSH | ACK, 200 + Math.floor(rnd() * 1200)], [true, ACK, 0]);
    }
    if (reset) pkts.push([false, RST | ACK, 0]);
    else pkts.push([true, FIN | ACK, 0], [false, FIN | ACK, 0], [true, ACK, 0]);

    let cAck = 0;
    let sAck = 0;
    for (const [fromClient, flags, len] of pkts) {
      t += 50_000 + rnd() * 400_000;
      const seq = fromClient ? cseq : sseq;
      const ack = flags & ACK ? (fromClient ? cAck : sAck) : 0;
      const ipId = Math.floor(rnd() * 0xffff);
      const thisSkb = skb++;
      const hops = fromClient ? PATH : [...PATH].reverse();
      let ht = t;
      if (!fromClient && flags & RST) {
        emit(2, ht - 2_000, (ts) => ({
          tsNs: ts, kind: Kind.RST_SENT, family: AF_INET, hook: Hook.TCP_SEND_RESET, netnsIno: NODES[2]!.netns.pod, skState: TcpState.ESTABLISHED, reason: 0,
          tuple: { saddr: server, daddr: client, sport, dport: cport }, seq, ack, tcpFlags: flags,
        }));
      }
      for (const h of hops) {
        ht += 10_000 + rnd() * 90_000;
        const spec = NODES[h.node]!;
        const ok = emit(h.node, ht, (ts) => ({
          tsNs: ts,
          skbId: thisSkb * 8n + BigInt(h.node),
          netnsIno: spec.netns[h.netns],
          ifindex: h.ifindex,
          ifname: h.ifname,
          kind: Kind.PACKET,
          hook: fromClient ? h.hook : REPLY_HOOK(h.egress),
          family: AF_INET,
          tcpFlags: flags,
          ipId,
          payloadLen: len,
          flags: ((fromClient ? h.egress : !h.egress) ? Flag.EGRESS : Flag.INGRESS) | Flag.CONN,
          aux: [0, isnC, flags === SYN ? 0 : isnS],
          tuple: fromClient ? { saddr: client, daddr: server, sport: cport, dport: sport } : { saddr: server, daddr: client, sport, dport: cport },
          seq,
          ack,
          window: 64_240,
        }));
        if (!ok) break;
      }
      const adv = len + (flags & (SYN | FIN) ? 1 : 0);
      if (fromClient) {
        cseq = (cseq + adv) >>> 0;
        sAck = cseq;
      } else {
        sseq = (sseq + adv) >>> 0;
        cAck = sseq;
      }
      if (total >= o.events) break;
    }
  }

  await mkdir(o.outDir, { recursive: true });
  const files: string[] = [];
  const corruptOffsets: { file: string; offset: number }[] = [];
  for (const [i, spec] of NODES.entries()) {
    const file = join(o.outDir, `${spec.name}.hoprec`);
    const body = logs[i]!.sorted();
    if (i === 1) {
      const picked = new Set<number>();
      while (picked.size < Math.min(o.corrupt ?? 0, logs[i]!.count)) picked.add(Math.floor(rnd() * logs[i]!.count));
      for (const rec of [...picked].sort((a, b) => a - b)) {
        body[rec * RECORD_SIZE + 24] = 0xee;
        corruptOffsets.push({ file, offset: 64 + rec * RECORD_SIZE });
      }
    }
    const clockOffsetNs = BigInt(startMs) * 1_000_000n - BigInt(spec.monoStart);
    await writeFile(file, Buffer.concat([encodeHeader({ node: spec.name, boot: spec.boot, clockOffsetNs }), body]));
    files.push(file);
  }
  return { files, events: total, flows, corruptOffsets };
}
