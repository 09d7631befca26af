/**
 * Packs records into batches, many records per Kafka message, in the order the
 * source gave them: each chunk is copied in as one run (a memcpy, nothing per
 * record). A batch is ready when it holds `maxRecords`, when the clock reference
 * changes, or when its first record has waited `lingerMs`; each ready batch goes to
 * the next partition in turn (from a random start, so agents spread out).
 *
 * Records are not routed to a partition by flow: the correlator is stateless (each
 * batch becomes rows on its own; paths and verdicts are computed from what is
 * stored), so which correlator reads a record does not matter, and routing each
 * record cost more than everything else the agent does with it.
 *
 * Pure bookkeeping: no I/O, no timers (the caller polls `due`), so tests drive it.
 * A ready batch's buffers are lent: the caller encodes them, then hands them back
 * with recycle(), and later batches reuse them. (A fresh buffer per batch, mostly
 * empty at low rates, was most of the agent's garbage and page faults.)
 */
import { RECORD_SIZE } from '../shared/record.js';
import type { AnnotatedChunk } from './connections.js';

export interface ReadyBatch {
  partition: number;
  records: Buffer;
  seqs: Float64Array;
  /** 8 bytes per record: client ISN, server ISN. */
  conn: Buffer;
  count: number;
  clockOffsetNs: bigint;
  /** Indexes of the records to name (AnnotatedChunk.named, shifted to the batch); null when a chunk did not say. */
  named: number[] | null;
  /** When its first record came in (its chunk's `since`, else the caller's clock): the linger runs from here. */
  since: number;
}

interface Space {
  buf: Buffer;
  conn: Buffer;
  seqs: Float64Array;
}

interface Open extends Space {
  count: number;
  named: number[] | null;
  since: number;
  clockOffsetNs: bigint;
}

export interface Batcher {
  /** Adds a chunk; returns the batches it filled. */
  add(chunk: AnnotatedChunk, now: number): ReadyBatch[];
  /** The open batch once it has lingered (any open batch when `all`). */
  due(now: number, all?: boolean): ReadyBatch[];
  /** When the open batch will have lingered; Infinity when none is open. */
  dueAt(): number;
  /** Gives a sealed batch's buffers back for reuse; the batch must not be read afterwards. */
  recycle(batch: ReadyBatch): void;
  /** Records held in the open batch. */
  readonly pending: number;
}

/** Buffers kept for reuse beyond the open batch's. */
const SPARE = 4;

export function createBatcher(partitions: number, maxRecords: number, lingerMs: number, firstPartition = Math.floor(Math.random() * partitions)): Batcher {
  let open: Open | undefined;
  let next = firstPartition % partitions;
  const spare: Space[] = [];
  /** The space behind each batch out on loan. */
  const lent = new WeakMap<ReadyBatch, Space>();

  function seal(): ReadyBatch {
    const o = open!;
    open = undefined;
    const batch = { partition: next, records: o.buf.subarray(0, o.count * RECORD_SIZE), conn: o.conn.subarray(0, o.count * 8), seqs: o.seqs.subarray(0, o.count), count: o.count, clockOffsetNs: o.clockOffsetNs, named: o.named, since: o.since };
    next = (next + 1) % partitions;
    lent.set(batch, o);
    return batch;
  }

  function space(): Space {
    return spare.pop() ?? { buf: Buffer.alloc(maxRecords * RECORD_SIZE), conn: Buffer.alloc(maxRecords * 8), seqs: new Float64Array(maxRecords) };
  }

  return {
    add(chunk, now) {
      const out: ReadyBatch[] = [];
      // A batch carries one clock reference: a new one starts a new batch.
      if (open && open.clockOffsetNs !== chunk.clockOffsetNs) out.push(seal());
      for (let i = 0; i < chunk.count; ) {
        open ??= { ...space(), count: 0, since: Math.min(now, chunk.since ?? now), clockOffsetNs: chunk.clockOffsetNs, named: [] };
        const o = open;
        const n = Math.min(chunk.count - i, maxRecords - o.count);
        if (!chunk.named) o.named = null;
        else if (o.named) for (const j of chunk.named) if (j >= i && j < i + n) o.named.push(o.count + j - i);
        chunk.buf.copy(o.buf, o.count * RECORD_SIZE, i * RECORD_SIZE, (i + n) * RECORD_SIZE);
        chunk.conn.copy(o.conn, o.count * 8, i * 8, (i + n) * 8);
        o.seqs.set(chunk.seqs.subarray(i, i + n), o.count);
        o.count += n;
        i += n;
        if (o.count === maxRecords) out.push(seal());
      }
      return out;
    },
    due(now, all = false) {
      return open && (all || now - open.since >= lingerMs) ? [seal()] : [];
    },
    dueAt() {
      return open ? open.since + lingerMs : Infinity;
    },
    recycle(batch) {
      const s = lent.get(batch);
      lent.delete(batch);
      if (s && spare.length < SPARE) spare.push(s);
    },
    get pending() {
      return open?.count ?? 0;
    },
  };
}
