/**
 * Runs a live source in the background and keeps every decoded record, so a
 * test can generate traffic and then wait for the records it expects.
 */
import { sleep } from '../../services/shared/retry.js';
import { decodeRecord, Flag, Hook, RECORD_SIZE, type HopRecord } from '../../services/shared/record.js';
import { createLiveSource, parseLiveOptions, type LiveOptionsInput, type LiveSource } from '../../services/agent/live/index.js';

export interface Capture {
  source: LiveSource;
  records: HopRecord[];
  /** Resolves with the matching records once `pred` finds at least `min` of them. */
  waitFor(pred: (r: HopRecord) => boolean, opts?: { min?: number; timeoutMs?: number; what?: string }): Promise<HopRecord[]>;
  /** Waits one drain period plus margin, to let late records arrive. */
  settle(ms?: number): Promise<void>;
  stop(): Promise<void>;
}

/** A packet leaving / entering a device, at either kind of device hook (tracepoint or tc). */
export const atEgress = (r: HopRecord): boolean => r.hook === Hook.NET_DEV_QUEUE || r.hook === Hook.TC_EGRESS;
export const atIngress = (r: HopRecord): boolean => r.hook === Hook.NETIF_RECEIVE || r.hook === Hook.TC_INGRESS;

/** A packet record's fields but its hook and time: what two captures of the same packet agree on. */
export function packetFields(r: HopRecord): string {
  const dir = r.flags & Flag.INGRESS ? 'in' : 'out';
  const { saddr, daddr, sport, dport } = r.tuple;
  return [r.netnsIno, r.ifindex, r.ifname, dir, `${saddr}:${sport}>${daddr}:${dport}`, r.tcpFlags, r.seq, r.ack, r.payloadLen, r.ipId, r.flags, r.ctId, r.ctStatus, r.ctInfo, r.window, r.mark, r.aux.join('/'), String(r.skbId)].join(' ');
}

/** Polls a check until it holds or ms pass (kernel objects are freed after an RCU grace period; the agent acts on its timer). */
export async function eventually(check: () => boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await sleep(50);
  }
  return check();
}

export function startCapture(input: LiveOptionsInput): Capture {
  // Drained every 5-20 ms (not up to 250 as an agent's quiet ring is): a test's settle() waits 100.
  const source = createLiveSource(parseLiveOptions({ drainIntervalMs: 5, drainIdleMs: 20, ...input }));
  const records: HopRecord[] = [];
  const loop = (async () => {
    for await (const c of source.chunks()) {
      for (let i = 0; i < c.count; i++) records.push(decodeRecord(c.buf, i * RECORD_SIZE));
    }
  })();
  return {
    source,
    records,
    async waitFor(pred, { min = 1, timeoutMs = 5000, what = 'records' } = {}) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const hits = records.filter(pred);
        if (hits.length >= min) return hits;
        if (Date.now() > end) {
          throw new Error(`timed out waiting for ${min} ${what}; have ${hits.length} of ${records.length} records; stats ${JSON.stringify(source.stats())}`);
        }
        await sleep(10);
      }
    },
    settle: (ms = 100) => sleep(ms),
    async stop() {
      await source.stop();
      await loop;
    },
  };
}
