import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateRecording } from '../../services/agent/generate.js';
import { openRecording, type CorruptReport } from '../../services/agent/recording-source.js';
import { flowId } from '../../services/shared/flowkey.js';
import { decodeRecord, RECORD_SIZE } from '../../services/shared/record.js';
import { decodeHeader, encodeHeader, HEADER_SIZE } from '../../services/shared/recording.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'hoprec-'));

async function readAll(file: string, chunkRecords = 1000) {
  const corrupt: CorruptReport[] = [];
  const src = await openRecording({ file, chunkRecords, onCorrupt: (r) => corrupt.push(r) });
  const seqs: number[] = [];
  let count = 0;
  for await (const c of src.chunks()) {
    for (let i = 0; i < c.count; i++) seqs.push(c.seqs ? c.seqs[i]! : c.firstSeq + i);
    count += c.count;
  }
  return { src, corrupt, seqs, count };
}

describe('recordings', () => {
  it('header round-trips and rejects foreign files with the file named', () => {
    const h = { node: 'node-a', boot: 12345, clockOffsetNs: -5n };
    expect(decodeHeader(encodeHeader(h), 'x')).toEqual(h);
    expect(() => decodeHeader(Buffer.alloc(64), '/tmp/foo.bin')).toThrow(/\/tmp\/foo.bin: not a hoptrace recording: bad magic/);
  });

  it('generator writes exactly N events over 3 nodes, deterministically', async () => {
    const a = await generateRecording({ outDir: tmp(), events: 5_000, seed: 3 });
    const b = await generateRecording({ outDir: tmp(), events: 5_000, seed: 3 });
    expect(a.events).toBe(5_000);
    expect(a.files).toHaveLength(3);
    let total = 0;
    for (const [i, f] of a.files.entries()) {
      const bytes = readFileSync(f);
      expect(bytes.equals(readFileSync(b.files[i]!))).toBe(true);
      total += (bytes.length - HEADER_SIZE) / RECORD_SIZE;
    }
    expect(total).toBe(5_000);
    expect(a.flows).toBeGreaterThan(40);
  });

  it('replays every record with seq = index, in kernel time order per node', async () => {
    const g = await generateRecording({ outDir: tmp(), events: 3_000, seed: 1 });
    const { seqs, count, corrupt, src } = await readAll(g.files[0]!, 128);
    expect(corrupt).toEqual([]);
    expect(count).toBe(src.totalRecords);
    expect(seqs).toEqual(Array.from({ length: count }, (_, i) => i));
    const body = readFileSync(g.files[0]!).subarray(HEADER_SIZE);
    let last = 0n;
    for (let i = 0; i < count; i++) {
      const r = decodeRecord(body, i * RECORD_SIZE);
      expect(r.tsNs >= last).toBe(true);
      last = r.tsNs;
    }
  });

  it('reports corrupt records with file and offset, counts them, and keeps the rest', async () => {
    const g = await generateRecording({ outDir: tmp(), events: 3_000, seed: 2, corrupt: 3 });
    const file = g.files[1]!;
    // A trailing partial record too.
    writeFileSync(file, Buffer.concat([readFileSync(file), Buffer.alloc(50)]));
    const { corrupt, count, src, seqs } = await readAll(file, 100);
    expect(corrupt.filter((c) => c.reason === 'bad_abi_version').map((c) => c.offset)).toEqual(g.corruptOffsets.map((c) => c.offset));
    expect(corrupt.at(-1)).toEqual({ file, offset: HEADER_SIZE + src.totalRecords * RECORD_SIZE, reason: 'truncated' });
    expect(count).toBe(src.totalRecords - 3);
    const skipped = g.corruptOffsets.map((c) => (c.offset - HEADER_SIZE) / RECORD_SIZE);
    for (const s of skipped) expect(seqs).not.toContain(s);
    expect(src.stats()).toMatchObject({ corrupt_bad_abi_version: 3, corrupt_truncated: 1 });
  });

  it('generated flows cross all three nodes', async () => {
    const g = await generateRecording({ outDir: tmp(), events: 2_000, seed: 5 });
    const nodesByFlow = new Map<number, Set<number>>();
    g.files.forEach((f, node) => {
      const body = readFileSync(f).subarray(HEADER_SIZE);
      for (let off = 0; off < body.length; off += RECORD_SIZE) {
        const id = flowId(body, off);
        if (!nodesByFlow.has(id)) nodesByFlow.set(id, new Set());
        nodesByFlow.get(id)!.add(node);
      }
    });
    const full = [...nodesByFlow.values()].filter((s) => s.size === 3).length;
    expect(full).toBeGreaterThanOrEqual(nodesByFlow.size - 1);
  });
});
