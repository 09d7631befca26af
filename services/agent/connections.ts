/**
 * Per-node connection tracking in the agent: learns each TCP connection's ISN pair
 * (client ISN from the SYN, server ISN from the SYN-ACK) for the tuples this node
 * sees, and stamps every record of the connection with it. The pair survives NAT,
 * so records of one connection from every node, on both sides of a DNAT, SNAT or
 * REDIRECT, get one identity and one Kafka partition without any agent knowing the
 * NAT mapping. Records seen before the SYN-ACK (the SYN itself, a CT record, a SYN
 * retransmission or drop) are held until the SYN-ACK passes this node, or until
 * `holdNs` of event time (or `holdMs` of wall time) have gone by, then released
 * with the server ISN unknown (0).
 *
 * A node that translates a connection (DNAT, SNAT) sees its packets on two tuples, and
 * learns each from the SYN it sees on it. A packet translated and then dropped on the
 * node never shows its translated SYN, so its drop would carry a tuple nothing learned:
 * CT records with a NAT mapping alias the translated tuple to the original one (the
 * kernel writes one beside such a drop, drop.bpf.c), and records without an entry of
 * their own take the aliased connection's.
 *
 * Records of a connection whose handshake this agent did not see (it started
 * before capture) keep an unknown identity and are joined by tuple downstream.
 * Pure bookkeeping over record bytes: no I/O, clocks passed in.
 *
 * A live kernel stamps most packets itself (HOP_F_CONN: aux[1], aux[2] are the ISNs,
 * learned by the programs from the same handshake), and those with both ISNs pass
 * without a lookup here: the per-record cost is then a few word loads. Recordings,
 * the other kinds, and packets the kernel could not stamp take the lookup by tuple.
 */
import { direction, flowId } from '../shared/flowkey.js';
import { Flag, Kind, RECORD_SIZE } from '../shared/record.js';
import type { RecordChunk } from './source.js';

/**
 * Records with their seqs and connection ids (8 bytes each: client ISN, server ISN, u32 LE).
 * Valid until the tracker's next process() or expire(): the consumer copies what it keeps.
 */
export interface AnnotatedChunk {
  buf: Buffer;
  count: number;
  seqs: Float64Array;
  conn: Buffer;
  clockOffsetNs: bigint;
  /** Indexes of the DROP and RST_SENT records, ascending (what the agent names: kernelNames); absent = not known. */
  named?: readonly number[];
  /** RecordChunk.since of the chunk the records came in; absent for released holds. */
  since?: number;
}

interface Entry {
  isnC: number;
  isnS: number;
  /** Canonical direction (flowkey.direction) of client -> server records. */
  clientDir: 0 | 1;
  held?: { recs: Buffer[]; seqs: number[]; offsets: bigint[]; sinceNs: number; sinceMs: number };
}

/** Record fields as 32-bit word indexes (bpf/events.h): ts_ns, flags (high half), PACKET aux[1], aux[2]. */
const W_TS = 0;
const W_FLAGS = 11;
const W_ISN_C = 30;
const W_ISN_S = 31;
const WORDS = RECORD_SIZE >>> 2;
const KIND = 25;
const L4PROTO = 28;
/** bpf/events.h: the record's tuple, and a CT record's REPLY tuple. */
const TUPLE_OFF = 48;
const CT_REPLY = 84;
const TUPLE_BYTES = 36;

/** Record i's kernel timestamp as a double: exact to 256 ns at 2^60 ns of uptime, plenty for hold times. */
const tsOf = (w: Uint32Array, i: number) => w[i * WORDS + W_TS + 1]! * 0x1_0000_0000 + w[i * WORDS + W_TS]!;

/** A 32-bit word view of b; b itself is copied first in the rare case it is not 4-byte aligned. */
function words(b: Buffer): { buf: Buffer; w: Uint32Array } {
  if (b.byteOffset & 3) b = Buffer.from(Uint8Array.prototype.slice.call(b).buffer);
  return { buf: b, w: new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2) };
}

export interface ConnTrackerOptions {
  holdNs?: bigint;
  holdMs?: number;
  /** Most connections remembered; idle ones are forgotten first. */
  maxEntries?: number;
  /** Most records held at once; beyond it the oldest hold is released early (counted). */
  maxHeld?: number;
}

/** Kinds whose reasons and kernel addresses the agent names in each batch. */
const needsNames = (kind: number) => kind === Kind.DROP || kind === Kind.RST_SENT;

const SYN = 0x02;
const ACK = 0x10;

export interface ConnTracker {
  process(chunk: RecordChunk, nowMs: number): AnnotatedChunk[];
  /** Releases holds past their time (all of them when `all`). */
  expire(nowMs: number, all?: boolean): AnnotatedChunk[];
  readonly held: number;
  stats(): { connections: number; natAliases: number; held: number; releasedUnanswered: number; releasedEarly: number };
}

class Out {
  recs: Buffer[] = [];
  seqs: number[] = [];
  conns: number[] = [];
  constructor(readonly clockOffsetNs: bigint) {}
  push(rec: Buffer, seq: number, isnC: number, isnS: number) {
    this.recs.push(rec);
    this.seqs.push(seq);
    this.conns.push(isnC, isnS);
  }
  build(): AnnotatedChunk | null {
    const n = this.recs.length;
    if (n === 0) return null;
    const conn = Buffer.allocUnsafe(8 * n);
    for (let i = 0; i < n; i++) {
      conn.writeUInt32LE(this.conns[2 * i]! >>> 0, 8 * i);
      conn.writeUInt32LE(this.conns[2 * i + 1]! >>> 0, 8 * i + 4);
    }
    const named: number[] = [];
    this.recs.forEach((r, i) => needsNames(r[KIND]!) && named.push(i));
    return { buf: Buffer.concat(this.recs, n * RECORD_SIZE), count: n, seqs: Float64Array.from(this.seqs), conn, clockOffsetNs: this.clockOffsetNs, named };
  }
}

export function createConnTracker(o: ConnTrackerOptions = {}): ConnTracker {
  const holdNs = Number(o.holdNs ?? 3_000_000_000n);
  const holdMs = o.holdMs ?? 3_000;
  const maxEntries = o.maxEntries ?? 1_000_000;
  const maxHeld = o.maxHeld ?? 100_000;
  const conns = new Map<number, Entry>();
  /**
   * Server ISN by client ISN, for connections answered on this node: a SYN that went
   * unanswered and was sent again can leave this node on another tuple (a new SNAT
   * port), and its first, unanswered tuple then joins the answered connection.
   */
  const answered = new Map<number, number>();
  /** Original tuple's key by translated tuple's key, from CT records with a NAT mapping. */
  const natAlias = new Map<number, number>();
  const natScratch = Buffer.alloc(RECORD_SIZE);
  /** Learns the translated tuple of the CT record at off (its REPLY tuple, at the packet tuple's place in a scratch record). */
  function learnNat(buf: Buffer, off: number) {
    buf.copy(natScratch, 0, off, off + CT_REPLY);
    buf.copy(natScratch, TUPLE_OFF, off + CT_REPLY, off + CT_REPLY + TUPLE_BYTES);
    const translated = flowId(natScratch, 0);
    const original = flowId(buf, off);
    if (translated === original || natAlias.get(translated) === original) return;
    natAlias.set(translated, original);
    if (natAlias.size > maxEntries) natAlias.delete(natAlias.keys().next().value!);
  }
  /** The connection of a tuple key: its own, or the one its NAT alias names. */
  function entryOf(key: number): Entry | undefined {
    const e = conns.get(key);
    if (e) return e;
    const original = natAlias.get(key);
    return original === undefined ? undefined : conns.get(original);
  }
  const holding = new Set<Entry>();
  let held = 0;
  let watermarkNs = 0;
  let releasedUnanswered = 0;
  let releasedEarly = 0;
  /** Ids and seqs of the last process(), reused (grown as needed). */
  let conn = Buffer.alloc(0);
  let conn32 = new Uint32Array(0);
  let seqBuf = new Float64Array(0);
  function scratch(count: number) {
    if (seqBuf.length < count) {
      conn = Buffer.from(new ArrayBuffer(8 * count));
      conn32 = new Uint32Array(conn.buffer);
      seqBuf = new Float64Array(count);
    }
    return { conn, conn32, seqs: seqBuf };
  }

  function release(e: Entry, outs: AnnotatedChunk[]) {
    const h = e.held;
    if (!h) return;
    e.held = undefined;
    holding.delete(e);
    held -= h.recs.length;
    if (e.isnS === 0) releasedUnanswered += h.recs.length;
    // A chunk carries one clock reference: group held records by theirs.
    const byOffset = new Map<bigint, Out>();
    h.recs.forEach((r, i) => {
      const off = h.offsets[i]!;
      let out = byOffset.get(off);
      if (!out) byOffset.set(off, (out = new Out(off)));
      out.push(r, h.seqs[i]!, e.isnC, e.isnS);
    });
    for (const out of byOffset.values()) outs.push(out.build()!);
  }

  function evictIdle() {
    if (conns.size <= maxEntries) return;
    // Map iteration is insertion order: the oldest connections go first.
    let drop = Math.ceil(maxEntries / 10);
    for (const [k, e] of conns) {
      if (drop-- <= 0) break;
      if (e.held) continue;
      conns.delete(k);
    }
  }

  return {
    process(chunk, nowMs) {
      const outs: AnnotatedChunk[] = [];
      const { count } = chunk;
      const { buf, w } = words(chunk.buf);
      // Pass 1: learn handshakes, so records earlier in the chunk (a CT record before its SYN) are stamped too.
      let namesNeeded = false;
      for (let i = 0; i < count; i++) {
        const off = i * RECORD_SIZE;
        const ts = tsOf(w, i);
        if (ts > watermarkNs) watermarkNs = ts;
        const kind = buf[off + KIND]!;
        if (kind !== Kind.PACKET) namesNeeded ||= needsNames(kind);
        if (buf[off + L4PROTO] !== 6) continue;
        if (kind === Kind.CT) learnNat(buf, off);
        if (kind !== Kind.PACKET) continue;
        const flags = buf[off + 29]!;
        if (!(flags & SYN)) continue;
        const key = flowId(buf, off);
        const dir = direction(buf, off);
        const seq = buf.readUInt32LE(off + 84);
        let e = conns.get(key);
        if (!(flags & ACK)) {
          if (!e || e.isnC !== seq || e.clientDir !== dir) {
            if (e) release(e, outs);
            e = { isnC: seq, isnS: 0, clientDir: dir };
            conns.set(key, e);
          }
        } else {
          const isnC = (buf.readUInt32LE(off + 88) - 1) >>> 0;
          if (!e || e.isnC !== isnC || e.clientDir === dir) {
            if (e) release(e, outs);
            e = { isnC, isnS: seq, clientDir: dir === 0 ? 1 : 0 };
            conns.set(key, e);
          } else if (e.isnS !== seq) {
            e.isnS = seq;
          }
          if (e.held) release(e, outs);
          answered.set(e.isnC, e.isnS);
          if (answered.size > maxEntries) answered.delete(answered.keys().next().value!);
        }
      }
      // Pass 2: stamp, or hold what precedes the SYN-ACK. Records not held are
      // compacted in place (the chunk's buffer is ours once yielded); ids and seqs go
      // into scratch arrays reused from chunk to chunk, so nothing is allocated per record.
      // Where pass 1 saw a record to name, their new indexes are noted on the way.
      const { conn, conn32, seqs } = scratch(count);
      const named: number[] = [];
      let kept = 0;
      for (let i = 0; i < count; i++) {
        const off = i * RECORD_SIZE;
        const seq = chunk.seqs ? chunk.seqs[i]! : chunk.firstSeq + i;
        let isnC = 0;
        let isnS = 0;
        if (buf[off + L4PROTO] === 6) {
          const stamped = buf[off + KIND] === Kind.PACKET && ((w[i * WORDS + W_FLAGS]! >>> 16) & Flag.CONN) !== 0;
          const kernelIsnS = stamped ? w[i * WORDS + W_ISN_S]! : 0;
          if (kernelIsnS !== 0) {
            isnC = w[i * WORDS + W_ISN_C]!;
            isnS = kernelIsnS;
          } else {
            const e = entryOf(flowId(buf, off));
            if (e && e.isnS === 0) {
              if (!e.held) {
                e.held = { recs: [], seqs: [], offsets: [], sinceNs: tsOf(w, i), sinceMs: nowMs };
                holding.add(e);
              }
              e.held.recs.push(Buffer.from(buf.subarray(off, off + RECORD_SIZE)));
              e.held.seqs.push(seq);
              e.held.offsets.push(chunk.clockOffsetNs);
              held++;
              continue;
            }
            if (e) {
              isnC = e.isnC;
              isnS = e.isnS;
            }
          }
        }
        if (namesNeeded && needsNames(buf[off + KIND]!)) named.push(kept);
        if (kept !== i) buf.copyWithin(kept * RECORD_SIZE, off, off + RECORD_SIZE);
        conn32[2 * kept] = isnC;
        conn32[2 * kept + 1] = isnS;
        seqs[kept] = seq;
        kept++;
      }
      if (kept) outs.push({ buf: buf.subarray(0, kept * RECORD_SIZE), count: kept, seqs: seqs.subarray(0, kept), conn: conn.subarray(0, 8 * kept), clockOffsetNs: chunk.clockOffsetNs, named, since: chunk.since });
      while (held > maxHeld && holding.size > 0) {
        const oldest = holding.values().next().value!;
        releasedEarly += oldest.held!.recs.length;
        release(oldest, outs);
      }
      evictIdle();
      return outs;
    },
    expire(nowMs, all = false) {
      const outs: AnnotatedChunk[] = [];
      for (const e of holding) {
        const h = e.held!;
        if (!(all || nowMs - h.sinceMs >= holdMs || watermarkNs - h.sinceNs >= holdNs)) continue;
        const isnS = answered.get(e.isnC);
        if (isnS !== undefined) e.isnS = isnS;
        release(e, outs);
      }
      return outs;
    },
    get held() {
      return held;
    },
    stats: () => ({ connections: conns.size, natAliases: natAlias.size, held, releasedUnanswered, releasedEarly }),
  };
}
