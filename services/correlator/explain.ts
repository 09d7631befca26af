/**
 * One flow in words: its path with the NAT at each step, then every verdict with
 * its evidence and fix. What `hoptrace explain` prints and the API returns as text.
 */
import { describeHop, fmt, type Exchange, type FlowPath } from './path.js';
import type { Verdict } from './verdicts.js';


const time = (us: number) => (Math.abs(us) < 1000 ? `${us.toFixed(1)} µs` : `${(us / 1000).toFixed(2)} ms`);

/** The first request and response in one line: how much of the client's wait was the server's, how much the network's. */
export function exchangeLine(x: Exchange): string {
  return `First request and response: the client waited ${time(x.clientWaitUs)}, of which the server ${time(x.serverUs)} (from the request's arrival to its answer) and the network ${time(x.networkUs)} (both ways).`;
}

/** `joined`: the connection's other flows read with this one (correlator/handshake.ts). */
export function explainText(path: FlowPath, verdicts: readonly Verdict[], joined: readonly string[] = []): string[] {
  const lines: string[] = [];
  const fwd = path.paths.forward;
  const asSent = fwd[0]?.dst;
  if (path.client && path.server) {
    const via = asSent && (asSent.addr !== path.server.addr || asSent.port !== path.server.port) ? `${fmt(asSent)}, served by ${fmt(path.server)}` : fmt(path.server);
    lines.push(`Connection ${fmt(path.client)} -> ${via} (${path.packets} packets seen).`);
  }
  if (fwd.length) {
    const nodes = [...new Set(fwd.map((h) => h.node))];
    const nats = fwd.filter((h) => h.nat).map((h) => `${h.nat} on ${h.node}`);
    // Conntrack NAT the tuples do not show (a REDIRECT inside a pod happens after the device hooks).
    const seen = new Set(fwd.flatMap((h) => (h.nat ? h.nat.split(', ') : [])));
    const cts = [...new Set(fwd.flatMap((h) => h.conntrack.filter((c) => !seen.has(c)).map((c) => `${c} (conntrack on ${h.node}${h.pod || h.netns ? `/${h.pod || h.netns}` : ''})`)))];
    lines.push(`Path: ${nodes.join(' -> ')}${nats.length ? `; NAT: ${nats.join('; ')}` : '; no NAT seen'}${cts.length ? `; also ${cts.join('; ')}` : ''}.`);
    if (path.exchange) lines.push(exchangeLine(path.exchange));
    const slow = [...path.segments].sort((a, b) => b.p50Us - a.p50Us)[0];
    if (slow && slow.p50Us >= 1000) lines.push(`Slowest segment: ${slow.from} -> ${slow.to}, p50 ${(slow.p50Us / 1000).toFixed(1)} ms over ${slow.samples} packets.`);
  }
  if (joined.length) lines.push(`Its handshake did not complete, so the nodes its SYN-ACK reached and those it did not recorded it apart: read together with flow ${joined.join(', ')}.`);
  if (!verdicts.length) lines.push('No reset, drop or retransmission burst on this flow.');
  for (const v of verdicts) {
    lines.push('', `${v.kind.toUpperCase().replace(/_/g, ' ')}: ${v.title}`);
    v.evidence.forEach((e, i) => lines.push(`  ${i + 1}. ${e}`));
    if (v.fix) lines.push(`  Fix: ${v.fix}`);
  }
  lines.push('', 'Hops, client -> server:');
  fwd.forEach((h, i) => lines.push(`  ${String(i + 1).padStart(2)}. ${describeHop(h)}`));
  return lines;
}
