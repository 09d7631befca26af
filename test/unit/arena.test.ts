import { describe, expect, it } from 'vitest';
import { RecordArena } from '../../services/agent/live/arena.js';
import { RECORD_SIZE } from '../../services/shared/record.js';

const at = (a: Buffer, base: Buffer) => (a.byteOffset - base.byteOffset) / RECORD_SIZE;

describe('record arena', () => {
  it('hands out regions in order, wraps to the front, and refuses while full', () => {
    const a = new RecordArena(10);
    const r0 = a.alloc(4)!;
    const base = Buffer.from(r0.buffer, r0.byteOffset - 0, 10 * RECORD_SIZE);
    expect(r0.length).toBe(4 * RECORD_SIZE);
    const r1 = a.alloc(4)!;
    expect(at(r1, base)).toBe(4);
    expect(a.alloc(3)).toBeNull(); // 2 left at the end, none at the front
    a.release(); // r0 back: 4 free at the front
    const r2 = a.alloc(3)!;
    expect(at(r2, base)).toBe(0); // wrapped, the end's 2 skipped
    expect(a.alloc(2)).toBeNull(); // between r2's end (3) and r1 (4): 1
    expect(at(a.alloc(1)!, base)).toBe(3);
    expect(a.used).toBe(8);
    a.release(); // r1
    expect(at(a.alloc(6)!, base)).toBe(4); // in order again after r2, r3
    a.release();
    a.release();
    a.release();
    expect(a.used).toBe(0);
    expect(at(a.alloc(10)!, base)).toBe(0);
  });

  it('never hands out memory that a region still holds', () => {
    const a = new RecordArena(64);
    const live: { buf: Buffer; tag: number }[] = [];
    let tag = 0;
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    for (let step = 0; step < 5000; step++) {
      if (live.length && rnd() < 0.45) {
        const { buf, tag: t } = live.shift()!;
        expect(buf.every((b) => b === (t & 0xff))).toBe(true);
        a.release();
      } else {
        const buf = a.alloc(1 + Math.floor(rnd() * 20));
        if (!buf) continue;
        tag++;
        buf.fill(tag & 0xff);
        expect(buf.byteOffset % RECORD_SIZE).toBe(0);
        live.push({ buf, tag });
      }
    }
  });

  it('trims the newest region to what was kept, and gives it back when nothing was', () => {
    const a = new RecordArena(10);
    const r0 = a.alloc(6)!;
    const base = Buffer.from(r0.buffer, r0.byteOffset, 10 * RECORD_SIZE);
    const kept = a.trimLast(2);
    expect([at(kept, base), kept.length]).toEqual([0, 2 * RECORD_SIZE]);
    expect(at(a.alloc(8)!, base)).toBe(2); // the 4 trimmed records are free again
    a.trimLast(0);
    expect(a.used).toBe(2);
    expect(at(a.alloc(8)!, base)).toBe(2); // the region given back leaves no trace
  });
});
