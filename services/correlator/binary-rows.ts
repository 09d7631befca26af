/**
 * hop_events rows in RowBinary straight from a batch's 128-byte records: the insert
 * path's hot loop. No row object, string or BigInt per event: fields are copied from
 * the record bytes into the output buffer, most of them, addresses included, as they
 * are into `packed` (shared/stored-events.ts). The bytes are exactly what encode.ts's
 * generic RowBinary encoder writes for batchToRows()'s objects
 * (test/unit/binary-rows.test.ts holds the two together), in HOP_EVENT_COLUMNS order.
 *
 * It also fills the batch's flow_parts accumulator and notes the flows worth judging,
 * so a batch is walked once.
 */
import type { DecodedBatch } from '../shared/batch.js';
import { direction } from '../shared/flowkey.js';
import { AF_INET, Kind, RECORD_SIZE } from '../shared/record.js';
import { PACKED_SIZE } from '../shared/stored-events.js';
import { BinWriter, putU16, putU32 } from './encode.js';
import { badRecords, FlowParts, offsetHalves, reasonName, recordFlowId, wallBig, wallHi, wallLo } from './rows.js';
import { isAnomaly } from './verdicts.js';

const TWO32 = 0x1_0000_0000;
const NS_PER_DAY = 86_400_000_000_000;
const DAY = BigInt(NS_PER_DAY);
/** Last day a ClickHouse 18.16 Date holds (2105-12-31); later days are stored as 0, as the text formats do. */
const LAST_DAY = 49_672;
/** packed's length as a two-byte LEB128 (128 <= PACKED_SIZE < 16384). */
const PACKED_LEN0 = (PACKED_SIZE & 0x7f) | 0x80;
const PACKED_LEN1 = PACKED_SIZE >>> 7;

/** A string as RowBinary (LEB128 length + UTF-8), encoded once per batch and copied per row. */
function strBytes(s: string): Buffer {
  const w = new BinWriter(s.length * 3 + 10);
  w.str(s);
  return Buffer.from(w.take());
}

const EMPTY = strBytes('');

/** Day number of wall time hi * 2^32 + lo, exact (the double is off by < 512 ns; near midnight BigInt decides). */
function dayOf(hi: number, lo: number): number {
  const approx = hi * TWO32 + lo;
  const day = Math.floor(approx / NS_PER_DAY);
  const rem = approx - day * NS_PER_DAY;
  const d = rem > 1_000 && rem < NS_PER_DAY - 1_000 ? day : Number(wallBig(hi, lo) / DAY);
  return d > LAST_DAY ? 0 : d;
}

export interface EncodedEvents {
  /** Events written (valid records). */
  events: number;
  parts: FlowParts;
}

/**
 * Appends the batch's valid records to `w` as hop_events RowBinary rows, counts them
 * into a FlowParts for the batch, and adds the flows worth judging to `anomalous`.
 * Records badRecords() names are skipped: the caller keeps those in `rejected`.
 */
export function encodeEvents(b: DecodedBatch, w: BinWriter, anomalous: Set<number>): EncodedEvents {
  const buf = b.records;
  const parts = new FlowParts(b);
  const agent = strBytes(b.agent);
  const node = strBytes(b.node);
  const netns = new Map<number, Buffer>();
  const [offHi, offLo] = offsetHalves(b);
  const boot = b.boot;
  // The one judge of which records cannot be stored; ascending indices, usually none.
  const bad = badRecords(b);
  let nextBad = 0;
  let events = 0;
  for (let i = 0; i < b.count; i++) {
    if (nextBad < bad.length && bad[nextBad]!.index === i) {
      nextBad++;
      continue;
    }
    const off = i * RECORD_SIZE;
    const hi = wallHi(buf, off, offHi, offLo);
    const lo = wallLo(buf, off, offLo);
    const isnC = b.isnC(i);
    const isnS = b.isnS(i);
    const fid = recordFlowId(b, i, isnC, isnS);
    const dir = direction(buf, off);
    const kind = buf[off + 25]!;
    const family = buf[off + 27]!;
    const isCt = kind === Kind.CT;
    const ino = buf.readUInt32LE(off + 16);
    let ns = netns.get(ino);
    if (ns === undefined) {
      ns = strBytes(b.netnsNames?.get(ino) ?? '');
      netns.set(ino, ns);
    }
    // Room for everything but the two names below: the fixed columns and packed.
    w.ensure(64 + PACKED_SIZE + agent.length + node.length + ns.length);
    let o = w.buf;
    let p = w.pos;
    p = putU16(o, p, dayOf(hi, lo));
    p = putU32(o, p, fid >>> 0);
    p = putU32(o, p, Math.floor(fid / TWO32));
    p = putU32(o, p, lo);
    p = putU32(o, p, hi);
    p = copy(o, p, agent, 0, agent.length);
    p = putU32(o, p, boot >>> 0);
    p = putU32(o, p, Math.floor(boot / TWO32));
    const seq = b.seqOf(i);
    p = putU32(o, p, seq >>> 0);
    p = putU32(o, p, Math.floor(seq / TWO32));
    p = copy(o, p, node, 0, node.length);
    p = copy(o, p, ns, 0, ns.length);
    o[p++] = 0; // pod: not known yet
    o[p++] = kind;
    let rname = '';
    if (kind === Kind.DROP || kind === Kind.RST_SENT) {
      // Rare: names through the writer's string path, which may grow the buffer.
      rname = reasonName(b, kind, buf.readUInt16LE(off + 40));
      const loc = kind === Kind.DROP ? (b.symbols?.get((BigInt(buf.readUInt32LE(off + 120)) << 32n) | BigInt(buf.readUInt32LE(off + 116))) ?? '') : '';
      w.pos = p;
      w.ensure((rname.length + loc.length) * 3 + PACKED_SIZE + 100);
      w.str(rname);
      w.str(loc);
      o = w.buf;
      p = w.pos;
    } else p = zeros(o, p, 2); // reason_name, location
    // packed, in PACKED_FIELDS order (shared/stored-events.ts).
    o[p++] = PACKED_LEN0;
    o[p++] = PACKED_LEN1;
    p = copy(o, p, buf, off, 24); // kernel_ts_ns, skb_id, netns_ino, ifindex
    if (isCt) p = zeros(o, p, 8);
    else p = copy(o, p, buf, off + 84, 8); // tcp_seq, tcp_ack
    p = copy(o, p, buf, off + 32, 8); // ct_id, ct_status
    if (isCt) p = zeros(o, p, 16);
    else p = copy(o, p, buf, off + 112, 16); // mark, aux0..2
    p = putU32(o, p, isnC);
    p = putU32(o, p, isnS);
    p = copy(o, p, buf, off + 80, 4); // sport, dport
    if (isCt) p = zeros(o, p, 2);
    else p = copy(o, p, buf, off + 92, 2); // tcp_window
    p = copy(o, p, buf, off + 44, 2); // payload_len
    p = copy(o, p, buf, off + 42, 2); // ip_id
    p = copy(o, p, buf, off + 46, 2); // flags
    if (isCt) p = copy(o, p, buf, off + 116, 4); // reply_sport, reply_dport
    else p = zeros(o, p, 4);
    p = copy(o, p, buf, off + 40, 2); // reason
    o[p++] = buf[off + 26]!; // hook
    o[p++] = family;
    o[p++] = buf[off + 28]!; // proto
    o[p++] = dir;
    o[p++] = buf[off + 29]!; // tcp_flags
    o[p++] = buf[off + 31]!; // ct_info
    o[p++] = buf[off + 30]!; // sk_state
    p = addr(o, p, buf, off + 48, family); // saddr
    p = addr(o, p, buf, off + 64, family); // daddr
    if (isCt) {
      p = addr(o, p, buf, off + 84, family);
      p = addr(o, p, buf, off + 100, family);
      p = zeros(o, p, 16); // ifname
    } else {
      p = zeros(o, p, 32); // reply addresses
      p = ifname(o, p, buf, off + 96);
    }
    w.pos = p;
    events++;
    parts.add(off, fid, dir, hi, lo, isnC, isnS);
    if ((kind === Kind.DROP || kind === Kind.RST_SENT || kind === Kind.RST_RECV || kind === Kind.RETRANS) && isAnomaly({ kind, reason_name: rname })) anomalous.add(fid);
  }
  return { events, parts };
}

/** A few bytes by hand: Buffer.copy is a native call, dearer than the loop at these sizes. */
function copy(o: Buffer, p: number, src: Buffer, from: number, n: number): number {
  for (let k = 0; k < n; k++) o[p + k] = src[from + k]!;
  return p + n;
}

function zeros(o: Buffer, p: number, n: number): number {
  for (let k = 0; k < n; k++) o[p + k] = 0;
  return p + n;
}

/** The interface name: up to its NUL, Latin-1 bytes as the record has them, NUL-padded to 16. */
function ifname(o: Buffer, p: number, buf: Buffer, off: number): number {
  let k = 0;
  for (; k < 16 && buf[off + k] !== 0; k++) o[p + k] = buf[off + k]!;
  for (; k < 16; k++) o[p + k] = 0;
  return p + 16;
}

/** An address's 16 wire bytes; IPv4 uses the first 4, the rest zero whatever the record holds. */
function addr(o: Buffer, p: number, buf: Buffer, off: number, family: number): number {
  if (family === AF_INET) return zeros(o, copy(o, p, buf, off, 4), 12);
  return copy(o, p, buf, off, 16);
}
