/**
 * Kernel text address -> symbol, from /proc/kallsyms (DROP records carry the
 * address of the code that freed the skb). Loaded once, by loadKernelSymbols() as
 * the agent starts, else on first use; when kptr_restrict hides addresses (all
 * zero), every lookup returns null.
 *
 * Loading parses ~120k lines: ~150 ms on an idle machine here. Left to the first
 * DROP record, it ran in a just-started agent's first batch on a busy node: over
 * the lab at full capture it held the event loop ~1.7 s while the ring buffer
 * overflowed, and the agent lost most records of its first seconds.
 */
import { readFileSync } from 'node:fs';

let addrs: BigUint64Array | null = null;
let names: string[] = [];

/** Reads /proc/kallsyms now, if not yet done. */
export function loadKernelSymbols(): void {
  if (addrs) return;
  const rows: [bigint, string][] = [];
  let text = '';
  try {
    text = readFileSync('/proc/kallsyms', 'utf8');
  } catch {
    /* not Linux or no procfs: no symbols */
  }
  for (const line of text.split('\n')) {
    const [a, type, name] = line.split(/\s+/, 3);
    if (!a || !name || !(type === 't' || type === 'T')) continue;
    const v = BigInt(`0x${a}`);
    if (v !== 0n) rows.push([v, name]);
  }
  rows.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  addrs = BigUint64Array.from(rows.map((r) => r[0]));
  names = rows.map((r) => r[1]);
}

/** The function containing `addr` ("nf_hook_slow+0x3c" style is left to callers), or null. */
export function kernelSymbol(addr: bigint): string | null {
  loadKernelSymbols();
  const a = addrs!;
  if (!a.length || addr < a[0]!) return null;
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (a[mid]! <= addr) lo = mid;
    else hi = mid - 1;
  }
  return names[lo] ?? null;
}

/** DROP records: aux[0] low word, aux[1] high word of the code address. */
export function dropLocation(aux: readonly [number, number, number]): bigint {
  return (BigInt(aux[1] >>> 0) << 32n) | BigInt(aux[0] >>> 0);
}
