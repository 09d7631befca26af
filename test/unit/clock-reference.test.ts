import { describe, expect, it } from 'vitest';
import { stableClockOffset } from '../../services/agent/live/libbpf.js';

describe('stable clock reference', () => {
  it('ignores measurement jitter, follows a step, and measures at most once per period', () => {
    const readings = [1_000_000n, 1_000_040n, 999_970n, 1_000_020n, 1_250_000n, 1_250_030n];
    let measured = 0;
    const ref = stableClockOffset(() => readings[Math.min(measured++, readings.length - 1)]!, 100, 10_000n);
    expect(ref(0)).toBe(1_000_000n); // the construction's reading; this call measured again (jitter)
    expect(measured).toBe(2);
    expect(ref(50)).toBe(1_000_000n);
    expect(measured).toBe(2); // within the period: no measurement
    expect(ref(100)).toBe(1_000_000n); // jitter of -30 ns
    expect(ref(200)).toBe(1_000_000n); // +20 ns
    expect(ref(300)).toBe(1_250_000n); // a 250 us step of the wall clock
    expect(ref(400)).toBe(1_250_000n); // jitter around the new reference
    expect(measured).toBe(6);
  });
});
