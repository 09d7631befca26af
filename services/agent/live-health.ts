/**
 * What the live source can only count, said in the agent's log as it happens: a device
 * of an owned namespace that could not be linked (its packets are not captured), and
 * net_dev_start_xmit failing to link again while an owned device queues (queue times
 * are missing meanwhile). Both are retried by the source and counted in /metrics; a
 * user reading the log would otherwise not know. One line when a failure starts, one
 * when it clears, nothing while nothing changes.
 */
import type { Logger } from '../shared/log.js';

export interface LiveHealthSource {
  stats(): Record<string, number>;
  status(): { devices?: { failed: readonly string[] } };
}

/** A checker to call periodically; failures already present now are in the start's status line. */
export function createLiveHealth(source: LiveHealthSource, log: Pick<Logger, 'warn' | 'info'>): () => void {
  const first = source.stats();
  let xmitFailed = first.xmit_link_failed ?? 0;
  let xmitLinks = first.xmit_links ?? 0;
  let xmitFailing = false;
  let devicesFailing = (source.status().devices?.failed ?? []).join('; ');
  return () => {
    const st = source.stats();
    const failed = st.xmit_link_failed ?? 0;
    const links = st.xmit_links ?? 0;
    if (failed > xmitFailed && !xmitFailing) {
      xmitFailing = true;
      log.warn({ xmit_link_failed: failed }, 'net_dev_start_xmit cannot be linked while an owned device queues: queue times are missing until it is (retried every 100 ms)');
    } else if (xmitFailing && links > xmitLinks) {
      xmitFailing = false;
      log.info({ xmit_link_failed: failed }, 'net_dev_start_xmit linked again: queue times are measured');
    } else if (xmitFailing && failed === xmitFailed) {
      xmitFailing = false; // no demand any more: a later failure is news again
    }
    xmitFailed = failed;
    xmitLinks = links;
    const devices = source.status().devices?.failed ?? [];
    const now = devices.join('; ');
    if (now !== devicesFailing) {
      if (now) log.warn({ devices }, `tcx NOT linked on ${devices.length} device(s) of owned namespaces, their packets are not captured: ${now}`);
      else log.info('tcx linked on every device of the owned namespaces again');
      devicesFailing = now;
    }
  };
}
