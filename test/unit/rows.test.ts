import { describe, expect, it } from 'vitest';
import { decodeBatch, encodeBatch } from '../../services/shared/batch.js';
import { batchToRows, eventDate } from '../../services/correlator/rows.js';
import { Kind } from '../../services/shared/record.js';
import { pack, pkt } from './helpers.js';

const meta = { agent: 'agent-a', node: 'node-a', boot: 7, clockOffsetNs: 1_764_000_000_000_000_000n };

describe('batch to rows', () => {
  it('one event row per record with wall time, ids, direction; one flow part per flow', () => {
    const recs = [
      pkt('10.0.0.9', 40000, '10.0.0.2', 80, { tsNs: 100n, payloadLen: 10, tcpFlags: 0x02, seq: 5 }),
      pkt('10.0.0.2', 80, '10.0.0.9', 40000, { tsNs: 200n, payloadLen: 20 }),
      pkt('10.0.0.2', 80, '10.0.0.9', 40000, { tsNs: 300n, kind: Kind.RST_SENT }),
      pkt('10.0.0.1', 1, '10.0.0.3', 2, { tsNs: 400n }),
    ];
    const rows = batchToRows(decodeBatch(encodeBatch(meta, pack(recs), [10, 11, 12, 13], 4)));
    expect(rows.bad).toEqual([]);
    expect(rows.events.map((e) => [e.seq, e.wall_ts_ns, e.dir])).toEqual([
      [10, '1764000000000000100', 1],
      [11, '1764000000000000200', 0],
      [12, '1764000000000000300', 0],
      [13, '1764000000000000400', 0],
    ]);
    expect(rows.events[0]).toMatchObject({ agent: 'agent-a', boot: 7, node: 'node-a', saddr: '10.0.0.9', tcp_seq: 5, tcp_flags: 2, event_date: '2025-11-24' });
    expect(rows.parts).toHaveLength(2);
    const p = rows.parts.find((x) => x.flow_id === rows.events[0]!.flow_id)!;
    expect(p).toMatchObject({ part_key: 'agent-a:7:10', a_addr: '10.0.0.2', a_port: 80, b_addr: '10.0.0.9', b_port: 40000, events: 3, packets: 2, bytes: 30, resets: 1, first_ts_ns: '1764000000000000100', last_ts_ns: '1764000000000000300', nodes: ['node-a'] });
  });

  it('is deterministic (what makes redelivery collapse)', () => {
    const b = encodeBatch(meta, pack([pkt('10.0.0.1', 1, '10.0.0.2', 2)]), [0], 1);
    expect(batchToRows(decodeBatch(b))).toEqual(batchToRows(decodeBatch(b)));
  });

  it('puts the client first in a connection\'s summary, and skips socket events with no port', () => {
    const recs = [
      pkt('10.0.0.1', 0, '10.0.0.9', 80, { kind: Kind.SOCK_STATE }),
      pkt('10.0.0.9', 80, '10.0.0.1', 40000, { tcpFlags: 0x12, seq: 500, ack: 101 }),
    ];
    const conn = Buffer.alloc(16);
    conn.writeUInt32LE(100, 8);
    conn.writeUInt32LE(500, 12);
    const rows = batchToRows(decodeBatch(encodeBatch(meta, pack(recs), [0, 1], 2, conn)));
    expect(rows.events).toHaveLength(2);
    expect(rows.parts).toHaveLength(1);
    expect(rows.parts[0]).toMatchObject({ a_addr: '10.0.0.1', a_port: 40000, b_addr: '10.0.0.9', b_port: 80, events: 1 });
  });

  it('sets corrupt records aside with their index', () => {
    const bad = pkt('10.0.0.1', 1, '10.0.0.2', 2);
    bad[25] = 99;
    const rows = batchToRows(decodeBatch(encodeBatch(meta, pack([pkt('10.0.0.1', 1, '10.0.0.2', 2), bad]), [0, 1], 2)));
    expect(rows.events).toHaveLength(1);
    expect(rows.bad).toEqual([{ index: 1, reason: 'bad_kind' }]);
  });

  it('event dates are UTC days', () => {
    expect(eventDate(0n)).toBe('1970-01-01');
    expect(eventDate(86_400_000_000_000n - 1n)).toBe('1970-01-01');
    expect(eventDate(86_400_000_000_000n)).toBe('1970-01-02');
  });
});
