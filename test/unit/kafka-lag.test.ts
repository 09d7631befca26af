import { describe, expect, it } from 'vitest';
import { waitForNoLag } from '../../services/shared/kafka.js';

describe('waitForNoLag', () => {
  it('reads the lag until it is 0, telling each nonzero reading', async () => {
    const readings = [5, 3, 0, 9];
    const heard: number[] = [];
    expect(await waitForNoLag(async () => readings.shift()!, 5000, (n) => heard.push(n), 1)).toBe(0);
    expect(heard).toEqual([5, 3]);
    expect(readings).toEqual([9]); // no reading after the 0
  });

  it('gives up at the deadline with the last reading', async () => {
    let reads = 0;
    const lag = async () => (reads++, 7);
    expect(await waitForNoLag(lag, 30, undefined, 5)).toBe(7);
    expect(reads).toBeGreaterThan(1);
  });

  it('with no time to wait, reads once', async () => {
    let reads = 0;
    expect(await waitForNoLag(async () => (reads++, 4), 0)).toBe(4);
    expect(reads).toBe(1);
  });
});
