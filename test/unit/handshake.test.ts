import { describe, expect, it } from 'vitest';
import { handshakeOf } from '../../services/correlator/handshake.js';
import { C, flowRows } from './fixtures/flows.js';

describe('handshakeOf', () => {
  it('a completed handshake: both ISNs, the client endpoint, the client\'s ACK of the SYN-ACK seen', () => {
    expect(handshakeOf(flowRows())).toEqual({ isnC: 1_000_000, isnS: 7_000_000, client: C, completed: true, reset: false });
  });

  it('no client ACK of the SYN-ACK anywhere: not completed', () => {
    const rows = flowRows().filter((r) => r.tcp_flags & 0x02);
    expect(handshakeOf(rows)).toMatchObject({ isnS: 7_000_000, completed: false });
  });

  it('the client node\'s records of an unanswered SYN: no server ISN', () => {
    const rows = flowRows().filter((r) => r.node === 'node-a' && r.tcp_flags === 0x02).map((r) => ({ ...r, isn_s: 0 }));
    expect(handshakeOf(rows)).toEqual({ isnC: 1_000_000, isnS: 0, client: C, completed: false, reset: false });
  });

  it('a SYN answered by a reset says so (it had no SYN-ACK, so no other flow)', () => {
    const syn = flowRows().find((r) => r.tcp_flags === 0x02)!;
    const rst = { ...syn, saddr: syn.daddr, sport: syn.dport, daddr: syn.saddr, dport: syn.sport, tcp_flags: 0x14, tcp_seq: 0, tcp_ack: 1_000_001, isn_s: 0 };
    expect(handshakeOf([{ ...syn, isn_s: 0 }, rst])).toMatchObject({ isnS: 0, completed: false, reset: true });
  });

  it('nothing to go on without ISNs, or with two connections\' ISNs', () => {
    expect(handshakeOf(flowRows({ withIsn: false }))).toBeNull();
    const rows = flowRows();
    expect(handshakeOf([...rows, { ...rows[0]!, isn_c: 5 }])).toBeNull();
  });
});
