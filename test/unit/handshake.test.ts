import { describe, expect, it } from 'vitest';
import { handshakeOf } from '../../services/api/handshake.js';
import { C, flowRows } from './fixtures/flows.js';

describe('handshakeOf', () => {
  it('a completed handshake: both ISNs, the client endpoint, the client\'s ACK of the SYN-ACK seen', () => {
    expect(handshakeOf(flowRows())).toEqual({ isnC: 1_000_000, isnS: 7_000_000, client: C, completed: true });
  });

  it('no client ACK of the SYN-ACK anywhere: not completed', () => {
    const rows = flowRows().filter((r) => r.tcp_flags & 0x02);
    expect(handshakeOf(rows)).toMatchObject({ isnS: 7_000_000, completed: false });
  });

  it('the client node\'s records of an unanswered SYN: no server ISN', () => {
    const rows = flowRows().filter((r) => r.node === 'node-a' && r.tcp_flags === 0x02).map((r) => ({ ...r, isn_s: 0 }));
    expect(handshakeOf(rows)).toEqual({ isnC: 1_000_000, isnS: 0, client: C, completed: false });
  });

  it('nothing to go on without ISNs, or with two connections\' ISNs', () => {
    expect(handshakeOf(flowRows({ withIsn: false }))).toBeNull();
    const rows = flowRows();
    expect(handshakeOf([...rows, { ...rows[0]!, isn_c: 5 }])).toBeNull();
  });
});
