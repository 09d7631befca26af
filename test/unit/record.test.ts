import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkRecord, CorruptRecordError, decodeRecord, encodeRecord, Flag, Hook, Kind, RECORD_SIZE, type HopRecord } from '../../services/shared/record.js';

const golden: HopRecord = {
  tsNs: 0x0102030405060708n,
  skbId: 0xffff888812345678n,
  netnsIno: 4026531840,
  ifindex: 7,
  kind: Kind.PACKET,
  hook: Hook.NET_DEV_QUEUE,
  family: 2,
  l4proto: 6,
  tcpFlags: 0x12,
  skState: 1,
  ctInfo: 2,
  ctId: 0xdeadbeef,
  ctStatus: 0x1b6,
  reason: 6,
  ipId: 0x4242,
  payloadLen: 1448,
  flags: Flag.CT | Flag.EGRESS,
  tuple: { saddr: '10.0.0.1', daddr: '10.0.0.2', sport: 43210, dport: 8080 },
  seq: 0xa0b0c0d0,
  ack: 0x11223344,
  window: 64240,
  ifname: 'veth-hopt0',
  mark: 0x99,
  aux: [1, 2, 3],
  reply: null,
};

// The same record, byte by byte, as the layout comment in bpf/events.h describes it.
const GOLDEN_HEX = [
  '0807060504030201', '78563412_8888ffff', '000000f0', '07000000', // ts, skb, netns, ifindex
  '01', '01', '02', '02', '06', '12', '01', '02', // abi, kind, hook, family, proto, flags, state, ct_info
  'efbeadde', 'b6010000', '0600', '4242', 'a805', '1100', // ct_id, ct_status, reason, ip_id, payload, flags
  '0a000001' + '00'.repeat(12), '0a000002' + '00'.repeat(12), 'caa8', '901f', // tuple
  'd0c0b0a0', '44332211', 'f0fa', '0000', // seq, ack, window, pad
  Buffer.from('veth-hopt0').toString('hex') + '00'.repeat(6), '99000000', '01000000', '02000000', '03000000',
].join('').replace(/_/g, '');

describe('record ABI', () => {
  it('golden bytes: layout pinned', () => {
    expect(GOLDEN_HEX.length).toBe(RECORD_SIZE * 2);
    expect(encodeRecord(golden).toString('hex')).toBe(GOLDEN_HEX);
    expect(decodeRecord(Buffer.from(GOLDEN_HEX, 'hex'))).toEqual(golden);
  });

  it('the C compiler lays out struct hop_event as the decoder reads it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hopabi-'));
    const bin = join(dir, 'golden');
    execFileSync('cc', ['-Wall', '-Werror', '-o', bin, join(__dirname, 'fixtures/golden_record.c')]);
    const bytes = execFileSync(bin);
    expect(bytes.toString('hex')).toBe(GOLDEN_HEX);
  });

  it('round-trips CT records with a reply tuple and IPv6 addresses', () => {
    const r = decodeRecord(
      encodeRecord({ tsNs: 5n, kind: Kind.CT, family: 10, tuple: { saddr: 'fd00::1', daddr: 'fd00:0:0:1::a', sport: 1, dport: 80 }, reply: { saddr: 'fd00:0:0:1::a', daddr: 'fd00::1', sport: 80, dport: 1 }, ctId: 9 }),
    );
    expect(r.tuple).toEqual({ saddr: 'fd00::1', daddr: 'fd00:0:0:1::a', sport: 1, dport: 80 });
    expect(r.reply).toEqual({ saddr: 'fd00:0:0:1::a', daddr: 'fd00::1', sport: 80, dport: 1 });
    expect(r.seq).toBe(0);
  });

  it.each([
    ['bad_abi_version', 24, 9],
    ['bad_kind', 25, 0],
    ['bad_kind', 25, 200],
    ['bad_hook', 26, 99],
    ['bad_family', 27, 7],
    ['bad_flags', 47, 0x80],
  ] as const)('flags %s (byte %i = %i)', (reason, byte, value) => {
    const b = encodeRecord(golden);
    b[byte] = value;
    expect(checkRecord(b, 0)).toBe(reason);
    expect(() => decodeRecord(b)).toThrow(CorruptRecordError);
  });

  it('flags a truncated record', () => {
    expect(checkRecord(Buffer.alloc(RECORD_SIZE - 1), 0)).toBe('truncated');
  });
});
