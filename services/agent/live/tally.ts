/**
 * Per-record tallies taken while a chunk is validated (the records are in cache
 * then): events by kind, drops by kernel reason, resets by reason and socket
 * state. Plain number arrays indexed by code: no allocation per record.
 * Names are attached only when metrics are collected.
 */
import { Kind } from '../../shared/record.js';

const KINDS = 8;
const REASONS = 1 << 16; // reason is a u16
const STATES = 16;

export class Tally {
  readonly byKind = new Float64Array(KINDS);
  /** DROP: enum skb_drop_reason -> count. */
  readonly drops = new Map<number, number>();
  /** RST_SENT: (reason << 4 | state) -> count. */
  readonly resetsSent = new Map<number, number>();
  /** RST_RECV: state -> count. */
  readonly resetsRecv = new Map<number, number>();

  /** Counts one validated record at `off` of `buf`. */
  add(buf: Buffer, off: number): void {
    const kind = buf[off + 25]!;
    this.byKind[kind]!++;
    if (kind === Kind.DROP) {
      const r = buf.readUInt16LE(off + 40);
      this.drops.set(r, (this.drops.get(r) ?? 0) + 1);
    } else if (kind === Kind.RST_SENT) {
      const k = (buf.readUInt16LE(off + 40) % REASONS) * STATES + (buf[off + 30]! % STATES);
      this.resetsSent.set(k, (this.resetsSent.get(k) ?? 0) + 1);
    } else if (kind === Kind.RST_RECV) {
      const s = buf[off + 30]!;
      this.resetsRecv.set(s, (this.resetsRecv.get(s) ?? 0) + 1);
    }
  }

  static splitReset(key: number): { reason: number; state: number } {
    return { reason: Math.floor(key / STATES), state: key % STATES };
  }
}
