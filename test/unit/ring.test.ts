/**
 * The ring buffer reader against a file laid out and mapped as the kernel's ring
 * buffer map is (consumer page, producer page, data area): runs of records, a run
 * that wraps the data area's end, records still being written, discarded ones, sizes
 * that are not whole records, and a run that does not fit what the caller can take.
 * The privileged suite reads the real kernel's ring.
 */
import { closeSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DRAIN_TARGET_RECORDS, nextDrainPeriod, RingReader } from '../../services/agent/live/ring.js';
import { bindings } from '../../services/agent/live/libbpf.js';
import { RECORD_SIZE } from '../../services/shared/record.js';

const BUSY = 0x80000000;
const DISCARD = 0x40000000;
const SIZE = 1 << 14;

describe('RingReader', () => {
  const page = bindings().libc.getpagesize();
  const file = `/dev/shm/hoptrace-ring-${process.pid}`;
  let fd: number;
  let reader: RingReader;
  let prod = 0;

  /** Writes `bytes` of the data area starting at ring position `pos`, wrapping as the kernel's double mapping does. */
  const put = (pos: number, bytes: Buffer) => {
    const off = pos % SIZE;
    const head = Math.min(bytes.length, SIZE - off);
    writeSync(fd, bytes.subarray(0, head), 0, head, 2 * page + off);
    if (head < bytes.length) writeSync(fd, bytes.subarray(head), 0, bytes.length - head, 2 * page);
  };
  const publish = () => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(prod));
    writeSync(fd, b, 0, 8, page);
  };
  /** n records whose bytes all equal their number (first, first + 1, ...). */
  const records = (first: number, n: number) => Buffer.concat(Array.from({ length: n }, (_, i) => Buffer.alloc(RECORD_SIZE, (first + i) & 0xff)));
  /** Appends a ring record holding `data`, with header flags. */
  const append = (data: Buffer, flags = 0) => {
    const hdr = Buffer.alloc(8);
    hdr.writeUInt32LE((data.length | flags) >>> 0, 0);
    put(prod, Buffer.concat([hdr, data]));
    const start = prod;
    prod += (data.length + 8 + 7) & ~7;
    return start;
  };
  const consumerPos = () => {
    const b = Buffer.alloc(8);
    readSync(fd, b, 0, 8, 0);
    return Number(b.readBigUInt64LE());
  };

  beforeEach(() => {
    fd = openSync(file, 'w+');
    writeSync(fd, Buffer.alloc(2 * page + SIZE), 0, 2 * page + SIZE, 0);
    prod = 0;
    reader = new RingReader(fd, SIZE);
  });
  afterEach(() => {
    reader.close();
    closeSync(fd);
    rmSync(file, { force: true });
  });

  it('copies runs of records whole, in order, and releases their space', () => {
    append(records(1, 3));
    append(records(4, 1));
    append(records(5, 31));
    publish();
    const out = Buffer.alloc(64 * RECORD_SIZE);
    const r = reader.drain(out);
    expect(r).toEqual({ count: 35, runs: 3, badSize: 0, full: false });
    expect(out.subarray(0, 35 * RECORD_SIZE).equals(records(1, 35))).toBe(true);
    expect(consumerPos()).toBe(prod);
    expect(reader.pending()).toBe(0);
  });

  it('reads a run that wraps the end of the data area', () => {
    // fill to just short of the end, consume, then write a run that straddles it
    const filler = Math.floor((SIZE - 8) / (RECORD_SIZE + 8)) - 1;
    for (let i = 0; i < filler; i++) append(records(i, 1));
    publish();
    const out = Buffer.alloc(128 * RECORD_SIZE);
    expect(reader.drain(out).count).toBe(filler);
    const start = append(records(100, 8));
    expect((start % SIZE) + 8 + 8 * RECORD_SIZE).toBeGreaterThan(SIZE); // it does wrap
    publish();
    expect(reader.drain(out)).toEqual({ count: 8, runs: 1, badSize: 0, full: false });
    expect(out.subarray(0, 8 * RECORD_SIZE).equals(records(100, 8))).toBe(true);
  });

  it('stops at a record still being written and takes it once committed', () => {
    append(records(1, 2));
    const busyAt = append(records(3, 2), BUSY);
    publish();
    const out = Buffer.alloc(64 * RECORD_SIZE);
    expect(reader.drain(out)).toEqual({ count: 2, runs: 1, badSize: 0, full: false });
    expect(reader.drain(out).count).toBe(0);
    const hdr = Buffer.alloc(4);
    hdr.writeUInt32LE(2 * RECORD_SIZE);
    put(busyAt, hdr);
    expect(reader.drain(out)).toEqual({ count: 2, runs: 1, badSize: 0, full: false });
    expect(out.subarray(0, 2 * RECORD_SIZE).equals(records(3, 2))).toBe(true);
  });

  it('skips discarded records, and counts (and skips) sizes that are not whole records', () => {
    append(records(1, 1), DISCARD);
    append(Buffer.alloc(100, 7));
    append(records(2, 1));
    publish();
    const out = Buffer.alloc(64 * RECORD_SIZE);
    expect(reader.drain(out)).toEqual({ count: 1, runs: 1, badSize: 1, full: false });
    expect(out.subarray(0, RECORD_SIZE).equals(records(2, 1))).toBe(true);
    expect(reader.pending()).toBe(0);
  });

  it('leaves a run that does not fit for the next drain, never half of it', () => {
    append(records(1, 20));
    append(records(21, 20));
    publish();
    const out = Buffer.alloc(31 * RECORD_SIZE);
    expect(reader.drain(out)).toEqual({ count: 20, runs: 1, badSize: 0, full: true }); // says more is waiting
    expect(reader.pending()).toBeGreaterThan(0);
    expect(reader.drain(out)).toEqual({ count: 20, runs: 1, badSize: 0, full: false });
    expect(out.subarray(0, 20 * RECORD_SIZE).equals(records(21, 20))).toBe(true);
  });
});

describe('drain timer period', () => {
  const T = DRAIN_TARGET_RECORDS;
  it('scales so that the next drain finds about DRAIN_TARGET_RECORDS at the rate this one found', () => {
    expect(nextDrainPeriod(10, T / 4, 10, 250)).toBe(40); // 1-in-8 sampling: wake less often
    expect(nextDrainPeriod(40, T, 10, 250)).toBe(40); // on target: stays
    expect(nextDrainPeriod(100, 2 * T, 10, 250)).toBe(50); // the rate doubled
  });
  it('stays within [min, max]: a busy ring drains every min ms, a quiet one every max', () => {
    expect(nextDrainPeriod(10, 20 * T, 10, 250)).toBe(10);
    expect(nextDrainPeriod(250, 3, 10, 250)).toBe(250);
  });
  it('doubles while drains find nothing', () => {
    expect(nextDrainPeriod(10, 0, 10, 250)).toBe(20);
    expect(nextDrainPeriod(160, 0, 10, 250)).toBe(250);
  });
});
