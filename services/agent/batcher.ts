/**
 * Packs records into per-partition batches, many records per Kafka message. Records
 * of a known TCP connection go to its client ISN's partition (flowkey.partitionOfConn),
 * so all its hops across NAT meet there; the others go by 5-tuple (flowkey.partitionOf),
 * both directions together. A batch is
 * ready when it holds `maxRecords` or when the first record of any open batch has
 * waited `lingerMs` (then all open batches are ready).
 * Pure bookkeeping: no I/O, no timers (the caller polls `due`), so tests drive it.
 *
 * A ready batch's buffers are lent: the caller encodes them, then hands them back
 * with recycle(), and later batches reuse them. (A fresh 128 KiB buffer per batch,
 * mostly empty at low rates, was most of the agent's garbage and page faults.)
 */
import { partitionOf, partitionOfConn } from '../shared/flowkey.js';
import { RECORD_SIZE } from '../shared/record.js';
import type { AnnotatedChunk } from './connections.js';

export interface ReadyBatch {
  partition: number;
  records: Buffer;
  seqs: number[];
  /** 8 bytes per record: client ISN, server ISN. */
  conn: Buffer;
  count: number;
  clockOffsetNs: bigint;
}

interface Space {
  buf: Buffer;
  conn: Buffer;
  /** The same memory as 32-bit words: records are copied word by word (a Buffer.copy per record costs more than the copy). */
  buf32: Uint32Array;
  conn32: Uint32Array;
}

interface Open extends Space {
  seqs: number[];
  count: number;
  since: number;
  clockOffsetNs: bigint;
}

export interface Batcher {
  /** Adds a chunk; returns the batches it filled. */
  add(chunk: AnnotatedChunk, now: number): ReadyBatch[];
  /** Batches whose linger has expired (all of them when `all`). */
  due(now: number, all?: boolean): ReadyBatch[];
  /** Gives a sealed batch's buffers back for reuse; the batch must not be read afterwards. */
  recycle(batch: ReadyBatch): void;
  /** Records held in open batches. */
  readonly pending: number;
}

/** Buffers kept for reuse beyond those in open batches. */
const SPARE = 4;

export function createBatcher(partitions: number, maxRecords: number, lingerMs: number): Batcher {
  const open: (Open | undefined)[] = new Array(partitions);
  const spare: Space[] = [];
  /** The space behind each batch out on loan. */
  const lent = new WeakMap<ReadyBatch, Space>();
  let pending = 0;

  function seal(p: number): ReadyBatch {
    const o = open[p]!;
    open[p] = undefined;
    pending -= o.count;
    const batch = { partition: p, records: o.buf.subarray(0, o.count * RECORD_SIZE), conn: o.conn.subarray(0, o.count * 8), seqs: o.seqs, count: o.count, clockOffsetNs: o.clockOffsetNs };
    lent.set(batch, o);
    return batch;
  }

  function space(): Space {
    const s = spare.pop();
    if (s) return s;
    // Own ArrayBuffers (never pool slices), so the word views are aligned.
    const buf = Buffer.from(new ArrayBuffer(maxRecords * RECORD_SIZE));
    const conn = Buffer.from(new ArrayBuffer(maxRecords * 8));
    return { buf, conn, buf32: words(buf)!, conn32: words(conn)! };
  }

  return {
    add(chunk, now) {
      const out: ReadyBatch[] = [];
      const src32 = words(chunk.buf);
      const conn32 = words(chunk.conn);
      for (let i = 0; i < chunk.count; i++) {
        const off = i * RECORD_SIZE;
        const isnC = chunk.conn.readUInt32LE(8 * i);
        const p = isnC !== 0 ? partitionOfConn(isnC, partitions) : partitionOf(chunk.buf, off, partitions);
        let o = open[p];
        // A batch carries one clock reference: a new one starts a new batch.
        if (o && o.clockOffsetNs !== chunk.clockOffsetNs) {
          out.push(seal(p));
          o = undefined;
        }
        if (!o) {
          const { buf, conn, buf32, conn32 } = space();
          o = { buf, conn, buf32, conn32, seqs: [], count: 0, since: now, clockOffsetNs: chunk.clockOffsetNs };
          open[p] = o;
        }
        if (src32 && conn32) {
          let s = off >>> 2;
          let d = o.count * (RECORD_SIZE >>> 2);
          for (let w = 0; w < RECORD_SIZE >>> 2; w++) o.buf32[d++] = src32[s++]!;
          o.conn32[2 * o.count] = conn32[2 * i]!;
          o.conn32[2 * o.count + 1] = conn32[2 * i + 1]!;
        } else {
          chunk.buf.copy(o.buf, o.count * RECORD_SIZE, off, off + RECORD_SIZE);
          chunk.conn.copy(o.conn, o.count * 8, 8 * i, 8 * i + 8);
        }
        o.seqs.push(chunk.seqs[i]!);
        o.count++;
        pending++;
        if (o.count === maxRecords) out.push(seal(p));
      }
      return out;
    },
    due(now, all = false) {
      // Once one batch's linger is up, every open batch goes with it: they leave in one
      // produce request instead of one each (at low rates a request costs far more than
      // its records), and none waits longer than lingerMs.
      let expired = all;
      for (let p = 0; p < partitions && !expired; p++) {
        const o = open[p];
        expired = o !== undefined && now - o.since >= lingerMs;
      }
      const out: ReadyBatch[] = [];
      if (!expired) return out;
      for (let p = 0; p < partitions; p++) if (open[p]) out.push(seal(p));
      return out;
    },
    recycle(batch) {
      const s = lent.get(batch);
      lent.delete(batch);
      if (s && spare.length < SPARE) spare.push(s);
    },
    get pending() {
      return pending;
    },
  };
}

/** A 32-bit word view of b, or null when b does not start on a 4-byte boundary. */
function words(b: Buffer): Uint32Array | null {
  return b.byteOffset & 3 ? null : new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2);
}
