/**
 * Names of kernel reason codes, from the running kernel's own enums (BTF), so
 * they follow the kernel: `enum skb_drop_reason` (DROP records) and
 * `enum sk_rst_reason` (RST_SENT records). Loaded once, on first use.
 */
import { TcpState } from '../../shared/record.js';
import { openKernelBtf } from './btf.js';

let drop: ReadonlyMap<number, string> | null = null;
let reset: ReadonlyMap<number, string> | null = null;

function load(): void {
  if (drop && reset) return;
  const btf = openKernelBtf();
  try {
    drop = btf.enumNames('skb_drop_reason', 'SKB_DROP_REASON_') ?? new Map();
    reset = btf.enumNames('sk_rst_reason', 'SK_RST_REASON_') ?? new Map();
  } finally {
    btf.close();
  }
}

/** e.g. 12 -> "NETFILTER_DROP" on 6.18; unknown codes -> "UNKNOWN_<n>". */
export function dropReasonName(n: number): string {
  load();
  return drop!.get(n) ?? `UNKNOWN_${n}`;
}

/** e.g. 1 -> "NO_SOCKET". */
export function resetReasonName(n: number): string {
  load();
  return reset!.get(n) ?? `UNKNOWN_${n}`;
}

/** The whole tables, for documentation and tests. */
export function reasonTables(): { drop: ReadonlyMap<number, string>; reset: ReadonlyMap<number, string> } {
  load();
  return { drop: drop!, reset: reset! };
}

const TCP_STATES = new Map<number, string>(Object.entries(TcpState).map(([name, n]) => [n, name]));

/** Kernel TCP state number -> name, from the decoder's TcpState (one list). */
export function tcpStateName(n: number): string {
  return n === 0 ? 'UNKNOWN' : (TCP_STATES.get(n) ?? `UNKNOWN_${n}`);
}
