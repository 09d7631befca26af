import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateRecording } from '../../services/agent/generate.js';
import { encodeEvents } from '../../services/correlator/binary-rows.js';
import { BinWriter, hopEventEncoder } from '../../services/correlator/encode.js';
import { badRecords, batchToRows } from '../../services/correlator/rows.js';
import { isAnomaly } from '../../services/correlator/verdicts.js';
import { decodeBatch, encodeBatch, type BatchMeta } from '../../services/shared/batch.js';
import { encodeRecord, Kind, RECORD_SIZE } from '../../services/shared/record.js';
import { decodeHeader, HEADER_SIZE } from '../../services/shared/recording.js';
import { pack, pkt } from './helpers.js';

const DAY_NS = 86_400_000_000_000n;

/** The direct encoder against the generic one over batchToRows' objects: same bytes, same parts, same flows to judge. */
function same(meta: BatchMeta, recs: Buffer[], conn?: Buffer, seqs = recs.map((_, i) => i)) {
  const b = decodeBatch(encodeBatch(meta, pack(recs), seqs, recs.length, conn));
  const rows = batchToRows(b);
  const w = new BinWriter(64);
  const anomalous = new Set<number>();
  const direct = encodeEvents(b, w, anomalous);
  expect(direct.events).toBe(rows.events.length);
  expect(w.take().equals(hopEventEncoder.RowBinary(rows.events)), 'hop_events bytes').toBe(true);
  expect(direct.parts.rows()).toEqual(rows.parts);
  expect([...anomalous].sort()).toEqual([...new Set(rows.events.filter(isAnomaly).map((e) => e.flow_id))].sort());
  return { rows, anomalous };
}

describe('RowBinary straight from records', () => {
  const meta: BatchMeta = {
    agent: 'agent-a',
    node: 'node-a',
    boot: 2 ** 40 + 7,
    clockOffsetNs: 1_764_000_000_000_000_000n,
    netnsNames: new Map([[4026531840, 'host'], [4026532001, 'pod-ü']]),
    dropReasonNames: new Map([[6, 'NETFILTER_DROP'], [2, 'NOT_SPECIFIED']]),
    resetReasonNames: new Map([[3, 'TCP_FLAGS']]),
    symbols: new Map([[0xffff_ffff_8100_0000n, 'nf_hook_slow']]),
  };

  it('writes what the generic encoder writes for every kind, family and odd field', () => {
    const conn = Buffer.alloc(8 * 9);
    conn.writeUInt32LE(1000, 0);
    conn.writeUInt32LE(5000, 4);
    const ifname = Buffer.from([0x65, 0x74, 0x68, 0xe9]).toString('latin1'); // 'ethé' in Latin-1
    const { anomalous, rows } = same(
      meta,
      [
        pkt('10.0.0.9', 40000, '10.0.0.2', 80, { tsNs: 5n, netnsIno: 4026531840, tcpFlags: 0x02, seq: 1000, ifname: 'veth0' }),
        pkt('255.0.10.100', 65535, '0.0.0.0', 1, { tsNs: 6n, netnsIno: 4026532001, ifname, payloadLen: 1448, ipId: 77, window: 512, mark: 9, aux: [1, 2, 3] }),
        pkt('fd00::1', 443, '2001:db8::ff00:42:8329', 50000, { tsNs: 7n, skbId: 0xffff_ffff_ffff_fffen }),
        pkt('10.0.0.2', 80, '10.0.0.9', 40000, { tsNs: 8n, kind: Kind.DROP, reason: 6, aux: [0x8100_0000, 0xffff_ffff, 0] }),
        pkt('10.0.0.2', 80, '10.0.0.9', 40000, { tsNs: 9n, kind: Kind.DROP, reason: 2 }),
        pkt('10.0.0.2', 80, '10.0.0.9', 40000, { tsNs: 10n, kind: Kind.RST_SENT, reason: 3, skState: 10 }),
        encodeRecord({ tsNs: 11n, kind: Kind.CT, family: 2, tuple: { saddr: '10.0.0.9', sport: 40000, daddr: '10.96.0.1', dport: 80 }, reply: { saddr: '10.244.1.5', sport: 8080, daddr: '10.0.0.9', dport: 40000 }, ctId: 42, ctStatus: 0x1a8, ctInfo: 2 }),
        encodeRecord({ tsNs: 12n, kind: Kind.CT, family: 10, tuple: { saddr: '::1', sport: 1, daddr: '::2', dport: 2 }, reply: { saddr: '::2', sport: 2, daddr: '::1', dport: 1 } }),
        pkt('10.0.0.1', 0, '10.0.0.9', 80, { tsNs: 13n, kind: Kind.SOCK_STATE }),
      ],
      conn,
      [5, 9, 6, 7, 8, 10, 11, 12, 13],
    );
    expect(rows.events.map((e) => e.reason_name)).toContain('TCP_FLAGS');
    expect(rows.events.map((e) => e.location)).toContain('nf_hook_slow');
    expect(anomalous.size).toBeGreaterThan(0);
  });

  it('gets the day right on both sides of midnight and for a negative clock offset', () => {
    for (const ts of [DAY_NS * 20_000n - 1n, DAY_NS * 20_000n, DAY_NS * 20_000n + 1n, DAY_NS * 20_000n - 600n, 0n]) {
      same({ ...meta, clockOffsetNs: 0n }, [pkt('10.0.0.1', 1, '10.0.0.2', 2, { tsNs: ts })]);
    }
    same({ ...meta, clockOffsetNs: -5_000_000_000n }, [pkt('10.0.0.1', 1, '10.0.0.2', 2, { tsNs: 1_764_000_000_000_000_000n })]);
    // A day past 2105: stored as day 0, as the text formats store it.
    same({ ...meta, clockOffsetNs: 0n }, [pkt('10.0.0.1', 1, '10.0.0.2', 2, { tsNs: DAY_NS * 60_000n })]);
  });

  it('skips what badRecords rejects: a corrupt record, a wall time below zero or past UInt64', () => {
    const corrupt = pkt('10.0.0.1', 1, '10.0.0.2', 2);
    corrupt[25] = 99;
    const recs = [pkt('10.0.0.1', 1, '10.0.0.2', 2, { tsNs: 10_000_000_000n }), corrupt, pkt('10.0.0.1', 1, '10.0.0.2', 2, { tsNs: 1n })];
    const b = decodeBatch(encodeBatch({ ...meta, clockOffsetNs: -5_000_000_000n }, pack(recs), [0, 1, 2], 3));
    expect(badRecords(b)).toEqual([
      { index: 1, reason: 'bad_kind' },
      { index: 2, reason: 'wall_time_out_of_range' },
    ]);
    same({ ...meta, clockOffsetNs: -5_000_000_000n }, recs);
    const high = decodeBatch(encodeBatch({ ...meta, clockOffsetNs: 2n ** 62n }, pack([pkt('10.0.0.1', 1, '10.0.0.2', 2, { tsNs: 0xffff_ffff_0000_0000n })]), [0], 1));
    expect(badRecords(high)).toEqual([{ index: 0, reason: 'wall_time_out_of_range' }]);
    expect(encodeEvents(high, new BinWriter(), new Set()).events).toBe(0);
  });

  it('matches on generated multi-node traffic, with long names that make the buffer grow', async () => {
    const gen = await generateRecording({ outDir: mkdtempSync(join(tmpdir(), 'hopbin-')), events: 3000, seed: 5 });
    for (const f of gen.files) {
      const bytes = readFileSync(f);
      const h = decodeHeader(bytes, f);
      const body = bytes.subarray(HEADER_SIZE);
      const recs = Array.from({ length: body.length / RECORD_SIZE }, (_, i) => body.subarray(i * RECORD_SIZE, (i + 1) * RECORD_SIZE));
      same({ ...meta, agent: 'a'.repeat(300), node: h.node, clockOffsetNs: h.clockOffsetNs }, recs);
    }
  });
});
