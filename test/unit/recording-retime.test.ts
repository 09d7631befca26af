import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateRecording } from '../../services/agent/generate.js';
import { openRecording } from '../../services/agent/recording-source.js';
import { RECORD_SIZE } from '../../services/shared/record.js';
import { decodeHeader, HEADER_SIZE } from '../../services/shared/recording.js';

describe('recording replay with retime', () => {
  it('stamps records with the monotonic clock at read time and the real wall offset; everything else is kept', async () => {
    const g = await generateRecording({ outDir: mkdtempSync(join(tmpdir(), 'hoprec-retime-')), events: 2_000, seed: 5 });
    const file = g.files[0]!;
    const bytes = readFileSync(file);
    const header = decodeHeader(bytes, file);
    const body = bytes.subarray(HEADER_SIZE);

    const src = await openRecording({ file, chunkRecords: 100, retime: true });
    const monoBefore = process.hrtime.bigint();
    const wallBeforeMs = Date.now();
    let index = 0;
    let lastTs = 0n;
    const offsets = new Set<bigint>();
    for await (const c of src.chunks()) {
      const monoAfterRead = process.hrtime.bigint();
      offsets.add(c.clockOffsetNs);
      expect(c.firstSeq).toBe(index);
      for (let i = 0; i < c.count; i++) {
        const off = i * RECORD_SIZE;
        const ts = c.buf.readBigUInt64LE(off);
        // The clock when the chunk was read: after the replay started, not after the consumer got it.
        expect(ts >= monoBefore && ts <= monoAfterRead).toBe(true);
        expect(ts >= lastTs).toBe(true);
        lastTs = ts;
        // Only ts_ns changes.
        expect(c.buf.subarray(off + 8, off + RECORD_SIZE).equals(body.subarray((index + i) * RECORD_SIZE + 8, (index + i + 1) * RECORD_SIZE))).toBe(true);
      }
      index += c.count;
    }
    const wallAfterMs = Date.now();
    expect(index).toBe(src.totalRecords);
    // One clock reference for the whole replay (a new one would split the agent's batches), not the recorded one.
    expect(offsets.size).toBe(1);
    const [offset] = [...offsets];
    expect(offset).not.toBe(header.clockOffsetNs);
    // wall_ts_ns = ts + offset is the real wall time of the read (Date.now() truncates to ms: 1 ms of slack each side).
    const wallMs = Number((lastTs + offset!) / 1_000_000n);
    expect(wallMs).toBeGreaterThanOrEqual(wallBeforeMs - 1);
    expect(wallMs).toBeLessThanOrEqual(wallAfterMs + 1);
  });

  it('leaves the recorded times alone without it', async () => {
    const g = await generateRecording({ outDir: mkdtempSync(join(tmpdir(), 'hoprec-retime-')), events: 500, seed: 5 });
    const file = g.files[1]!;
    const bytes = readFileSync(file);
    const src = await openRecording({ file });
    for await (const c of src.chunks()) {
      expect(c.clockOffsetNs).toBe(decodeHeader(bytes, file).clockOffsetNs);
      expect(c.buf.equals(bytes.subarray(HEADER_SIZE, HEADER_SIZE + c.count * RECORD_SIZE))).toBe(true);
    }
  });
});
