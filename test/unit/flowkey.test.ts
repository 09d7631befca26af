import { describe, expect, it } from 'vitest';
import { direction, flowId } from '../../services/shared/flowkey.js';
import { pkt } from './helpers.js';

describe('flow key', () => {
  it.each([
    ['IPv4', '10.0.0.1', 40000, '10.0.0.2', 8080],
    ['IPv6', 'fd00::1', 40000, 'fd00::2', 443],
    ['same address, different ports', '10.0.0.1', 1, '10.0.0.1', 2],
  ])('%s: both directions share the flow id, opposite direction', (_n, a, pa, b, pb) => {
    const fwd = pkt(a, pa, b, pb);
    const rev = pkt(b, pb, a, pa);
    expect(flowId(fwd, 0)).toBe(flowId(rev, 0));
    expect(direction(fwd, 0) + direction(rev, 0)).toBe(1);
  });

  it('is a safe integer and differs between flows', () => {
    const ids = new Set<number>();
    for (let p = 1; p <= 5000; p++) {
      const id = flowId(pkt('10.0.0.1', p, '10.0.0.2', 80), 0);
      expect(Number.isSafeInteger(id)).toBe(true);
      ids.add(id);
    }
    expect(ids.size).toBe(5000);
  });

  // Values of the original definition (two separate murmur3 passes); flow ids are stored, so they must never change.
  it.each([
    ['10.0.0.1', 40000, '10.0.0.2', 8080, 6, 3733304991899410],
    ['10.0.0.2', 8080, '10.0.0.1', 40000, 6, 3733304991899410],
    ['fd00::1', 40000, 'fd00::2', 443, 6, 3113326743140912],
    ['10.1.2.3', 53, '10.9.8.7', 33333, 17, 1281000106098708],
    ['10.0.0.1', 1, '10.0.0.1', 2, 6, 2187826281796328],
  ])('flow id of %s:%d <-> %s:%d (proto %d) is stable', (a, pa, b, pb, l4proto, id) => {
    expect(flowId(pkt(a, pa, b, pb, { l4proto }), 0)).toBe(id);
  });

  it('protocol is part of the key', () => {
    expect(flowId(pkt('10.0.0.1', 1, '10.0.0.2', 2, { l4proto: 6 }), 0)).not.toBe(flowId(pkt('10.0.0.1', 1, '10.0.0.2', 2, { l4proto: 17 }), 0));
  });
});
