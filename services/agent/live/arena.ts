/**
 * A fixed area for the chunks a live source has drained but the agent has not
 * finished with, handed out and given back in FIFO order (chunks are consumed in
 * the order they were drained). One allocation at start instead of a fresh Buffer
 * per chunk: at full rate that was tens of MB/s of external memory, and V8 answers
 * external-memory growth with major GCs (`--trace-gc`: "external memory pressure").
 *
 * Regions are contiguous; one that does not fit before the end starts again at the
 * front, and the space skipped at the end counts as used until the regions before
 * it are given back. Every region starts on a RECORD_SIZE boundary of an own
 * ArrayBuffer, so word views of it are aligned.
 */
import { RECORD_SIZE } from '../../shared/record.js';

export class RecordArena {
  private readonly buf: Buffer;
  /** Regions handed out and not given back, oldest first: [start, end) in records. */
  private readonly regions: { start: number; end: number }[] = [];

  constructor(readonly capacity: number) {
    this.buf = Buffer.from(new ArrayBuffer(capacity * RECORD_SIZE));
  }

  /** Records in regions handed out (without the space skipped at a wrap). */
  get used(): number {
    return this.regions.reduce((s, r) => s + r.end - r.start, 0);
  }

  /** A region for `n` records (n <= capacity), or null while there is no room. */
  alloc(n: number): Buffer | null {
    const first = this.regions[0];
    const last = this.regions[this.regions.length - 1];
    let start = 0;
    if (first && last) {
      if (last.start >= first.start) {
        // In order: room after the newest region, else before the oldest (a wrap).
        if (this.capacity - last.end >= n) start = last.end;
        else if (first.start < n) return null;
      } else if (first.start - last.end >= n) {
        // Wrapped: room between the newest region and the oldest.
        start = last.end;
      } else {
        return null;
      }
    }
    this.regions.push({ start, end: start + n });
    return this.buf.subarray(start * RECORD_SIZE, (start + n) * RECORD_SIZE);
  }

  /**
   * Shortens the newest region to its first `n` records (n no more than it has; 0 gives
   * it back) and returns them: a region taken whole for a drain keeps only what was kept.
   */
  trimLast(n: number): Buffer {
    const last = this.regions[this.regions.length - 1]!;
    last.end = last.start + Math.min(n, last.end - last.start);
    if (n === 0) this.regions.pop();
    return this.buf.subarray(last.start * RECORD_SIZE, last.end * RECORD_SIZE);
  }

  /** Gives back the oldest region handed out. */
  release(): void {
    this.regions.shift();
  }
}
