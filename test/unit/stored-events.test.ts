// hop_events' packed layout: packEvent and the RowBinary reader agree, and a reply that
// does not parse is an error, not rows. (SQL's ALIAS columns: test/integration/insert-formats.test.ts.)
import { describe, expect, it } from 'vitest';
import { BinWriter, hopEventEncoder } from '../../services/correlator/encode.js';
import type { HopEventRow } from '../../services/correlator/rows.js';
import { EVENT_COLUMNS } from '../../services/correlator/timeline.js';
import { Kind } from '../../services/shared/record.js';
import { decodeEventRows, MalformedRowsError, packEvent, PACKED_AT, PACKED_SIZE, STORED_COLUMNS } from '../../services/shared/stored-events.js';

const row = (o: Partial<HopEventRow> = {}): HopEventRow => ({
  event_date: '2026-12-02', flow_id: 9, wall_ts_ns: '1796169600000000001', kernel_ts_ns: '18446744073709551615',
  agent: 'agent-a', boot: 3, seq: 7, node: 'node-a', netns_ino: 4026531840, netns: 'client', pod: 'web-0', ifindex: 2, ifname: 'eth0',
  hook: 3, kind: Kind.PACKET, family: 2, proto: 6, dir: 1, saddr: '10.0.0.9', daddr: '10.96.0.10', sport: 40000, dport: 80,
  tcp_seq: 0xffff_ffff, tcp_ack: 1, tcp_flags: 0x18, tcp_window: 65535, payload_len: 1448, ip_id: 7, flags: 16,
  ct_id: 0, ct_status: 0, ct_info: 0, reply_saddr: '', reply_daddr: '', reply_sport: 0, reply_dport: 0,
  reason: 0, reason_name: '', location: '', sk_state: 1, skb_id: '5', mark: 0, aux0: 1, aux1: 2, aux2: 3, isn_c: 11, isn_s: 12,
  ...o,
});

/** The RowBinary ClickHouse sends for ([fid,] EVENT_READ_COLUMNS) of these rows; packed cut to `packedLen` bytes if asked. */
function reply(rows: HopEventRow[], withFid: boolean, packedLen = PACKED_SIZE): Buffer {
  const w = new BinWriter(1024);
  for (const r of rows) {
    if (withFid) w.u64(r.flow_id);
    w.u64(r.wall_ts_ns);
    w.str(r.agent);
    w.u64(r.boot);
    w.u64(r.seq);
    for (const s of [r.node, r.netns, r.pod]) w.str(s);
    w.u8(r.kind);
    w.str(r.reason_name);
    w.str(r.location);
    w.varint(packedLen);
    w.ensure(PACKED_SIZE);
    packEvent(r).copy(w.buf, w.pos, 0, packedLen);
    w.pos += packedLen;
  }
  return Buffer.from(w.take());
}

const logical = (r: object) => Object.fromEntries(EVENT_COLUMNS.map((c) => [c, typeof (r as Record<string, unknown>)[c] === 'number' && ['wall_ts_ns', 'boot', 'seq'].includes(c) ? String((r as Record<string, unknown>)[c]) : (r as Record<string, unknown>)[c]]));

describe('stored events', () => {
  it('the reader gives back every field packEvent stored, IPv4, IPv6 and conntrack', () => {
    const rows = [
      row(),
      row({ family: 10, saddr: 'fd00::1', daddr: '2001:db8::a:0:0:1', ifname: 'veth0123456789ab', seq: 8 }),
      row({ kind: Kind.CT, ifname: '', ct_id: 0xffff_ffff, ct_status: 398, ct_info: 3, reply_saddr: '10.244.1.7', reply_daddr: '10.0.0.9', reply_sport: 8080, reply_dport: 40000, seq: 9 }),
      row({ kind: Kind.DROP, reason: 2, reason_name: 'NO_SOCKET', location: 'tcp_v4_rcv', seq: 10 }),
    ];
    const back = decodeEventRows(reply(rows, true), true);
    expect(back.map((r) => r.fid)).toEqual(['9', '9', '9', '9']);
    expect(back.map(logical)).toEqual(rows.map(logical));
    expect(decodeEventRows(reply(rows, false), false).map(logical)).toEqual(rows.map(logical));
  });

  it('packs the layout the table documents: offsets in order, one fixed size', () => {
    const p = packEvent(row());
    expect(p.length).toBe(PACKED_SIZE);
    expect(p.readUInt32LE(PACKED_AT.tcp_seq)).toBe(0xffff_ffff);
    expect(p.readBigUInt64LE(PACKED_AT.kernel_ts_ns)).toBe(0xffff_ffff_ffff_ffffn);
    expect([...p.subarray(PACKED_AT.saddr, PACKED_AT.saddr + 16)]).toEqual([10, 0, 0, 9, ...Array(12).fill(0)]);
  });

  it('a cut or wrong-sized reply is an error naming what is wrong', () => {
    const good = reply([row()], false);
    expect(() => decodeEventRows(good.subarray(0, good.length - 1), false)).toThrow(MalformedRowsError);
    expect(() => decodeEventRows(good.subarray(0, good.length - 1), false)).toThrow(/cut short/);
    expect(() => decodeEventRows(reply([row()], false, PACKED_SIZE - 1), false)).toThrow(`packed is ${PACKED_SIZE - 1} bytes, not ${PACKED_SIZE}`);
  });

  it('the row encoder and the migration name the same real columns', () => {
    expect(hopEventEncoder.columns).toEqual([...STORED_COLUMNS]);
  });
});
