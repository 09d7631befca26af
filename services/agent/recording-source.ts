/**
 * Replays a recording file as a RecordSource: at a given rate or as fast as the
 * agent pulls. Corrupt records are reported (file, offset, reason), counted, and
 * skipped; the rest flows. A record's EventId.seq is its index in the file, so a
 * replay repeated after a crash produces the same ids and collapses downstream.
 */
import { open } from 'node:fs/promises';
import { checkRecord, RECORD_SIZE, type CorruptReason } from '../shared/record.js';
import { decodeHeader, HEADER_SIZE, type RecordingHeader } from '../shared/recording.js';
import { sleep } from '../shared/retry.js';
import { rejectedStats, type RecordChunk, type RecordSource } from './source.js';

export interface CorruptReport {
  file: string;
  /** Byte offset of the record in the file. */
  offset: number;
  reason: CorruptReason;
}

export interface RecordingSourceOptions {
  file: string;
  /** Records per second; 0 = as fast as pulled. */
  rate?: number;
  /** Records per chunk. */
  chunkRecords?: number;
  /**
   * Replay as if captured now (latency benchmarks): each record's ts_ns becomes this
   * host's CLOCK_MONOTONIC when its chunk is read, and the chunk's clock offset this
   * host's wall-minus-monotonic, so wall_ts_ns is the moment the record was emitted.
   * Order and seqs are kept; the recorded spacing between records is not.
   */
  retime?: boolean;
  onCorrupt?: (r: CorruptReport) => void;
}

export async function openRecording(o: RecordingSourceOptions): Promise<RecordSource & { header: RecordingHeader; totalRecords: number }> {
  const fh = await open(o.file, 'r');
  let header: RecordingHeader;
  let size: number;
  try {
    const hb = Buffer.alloc(HEADER_SIZE);
    await fh.read(hb, 0, HEADER_SIZE, 0);
    header = decodeHeader(hb, o.file);
    size = (await fh.stat()).size;
  } catch (err) {
    await fh.close();
    throw err;
  }
  const chunkRecords = o.chunkRecords ?? 4096;
  const rate = o.rate ?? 0;
  const counters: Record<string, number> = { records_read: 0 };
  const rejected: Partial<Record<CorruptReason, number>> = {};
  let stopped = false;
  const totalRecords = Math.floor((size - HEADER_SIZE) / RECORD_SIZE);
  const clockOffsetNs = o.retime ? wallMinusMonotonicNs() : header.clockOffsetNs;

  function corrupt(offset: number, reason: CorruptReason) {
    rejected[reason] = (rejected[reason] ?? 0) + 1;
    o.onCorrupt?.({ file: o.file, offset, reason });
  }

  async function* chunks(): AsyncGenerator<RecordChunk> {
    const started = Date.now();
    let index = 0;
    // One buffer for every chunk: the consumer has a chunk only until it pulls the next
    // (RecordChunk.buf), and a fresh buffer each time was most of a replay's garbage.
    const buf = Buffer.from(new ArrayBuffer(chunkRecords * RECORD_SIZE));
    try {
      while (!stopped && index < totalRecords) {
        const n = Math.min(chunkRecords, totalRecords - index);
        // Valid records are compacted to the front in place (nothing moves unless a record is corrupt).
        const { bytesRead } = await fh.read(buf, 0, n * RECORD_SIZE, HEADER_SIZE + index * RECORD_SIZE);
        const got = Math.floor(bytesRead / RECORD_SIZE);
        if (got === 0) break;
        let kept = 0;
        let seqs: number[] | undefined;
        for (let i = 0; i < got; i++) {
          const bad = checkRecord(buf, i * RECORD_SIZE);
          if (bad) {
            corrupt(HEADER_SIZE + (index + i) * RECORD_SIZE, bad);
            seqs ??= Array.from({ length: kept }, (_, k) => index + k);
            continue;
          }
          if (kept !== i) buf.copyWithin(kept * RECORD_SIZE, i * RECORD_SIZE, (i + 1) * RECORD_SIZE);
          seqs?.push(index + i);
          kept++;
        }
        counters.records_read! += got;
        if (o.retime) {
          const now = process.hrtime.bigint();
          for (let k = 0; k < kept; k++) buf.writeBigUInt64LE(now, k * RECORD_SIZE);
        }
        if (kept > 0) {
          yield { buf: buf.subarray(0, kept * RECORD_SIZE), count: kept, firstSeq: seqs ? seqs[0]! : index, seqs, clockOffsetNs };
        }
        index += got;
        if (rate > 0) {
          const due = started + (index / rate) * 1000;
          const wait = due - Date.now();
          if (wait > 0) await sleep(wait);
        }
      }
      const tail = size - HEADER_SIZE - totalRecords * RECORD_SIZE;
      if (!stopped && tail > 0) corrupt(HEADER_SIZE + totalRecords * RECORD_SIZE, 'truncated');
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  return {
    node: header.node,
    boot: header.boot,
    header,
    totalRecords,
    chunks,
    async stop() {
      stopped = true;
    },
    stats: () => ({ ...counters, ...rejectedStats(rejected) }),
    rejected: () => rejected,
  };
}

/** Wall clock minus CLOCK_MONOTONIC (process.hrtime's clock on Linux), ns, to sub-microsecond precision. */
export function wallMinusMonotonicNs(): bigint {
  const mono = process.hrtime.bigint();
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6)) - mono;
}
