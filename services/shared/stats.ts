/** Small statistics shared by reports and benchmarks. */

/** Nearest-rank percentile (q in [0, 1]) of values sorted ascending; NaN when there are none. */
export function percentile(sorted: readonly number[], q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]! : NaN;
}
