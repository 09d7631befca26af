/**
 * `hoptrace report`: what happened in a time range, for a person arriving after an
 * incident: every verdict grouped by kind (the first of each explained in full),
 * and the slowest hop segments.
 */
import type { Command } from 'commander';
import type { Incident } from '../api/queries.js';
import type { LatencyReport } from '../correlator/report.js';
import type { Config } from '../shared/config.js';
import { apiGet, defaultApiUrl, humanUs } from './query.js';

const TITLES: Record<string, string> = {
  nat_bypass_reset: 'Connection reset: NAT bypass',
  reset_refused: 'Connection refused',
  reset_no_socket: 'Reset: no socket',
  reset_app_abort: 'Reset: application abort',
  reset_other: 'Reset',
  reset_received: 'Reset received from outside',
  drop: 'Packets dropped',
  retrans_burst: 'Retransmission burst',
};

export function formatReport(incidents: Incident[], explains: Map<string, string[]>, latency: LatencyReport, slowUs: number): string {
  const out: string[] = [];
  const byKind = new Map<string, Incident[]>();
  for (const i of [...incidents].reverse()) byKind.set(i.kind, [...(byKind.get(i.kind) ?? []), i]);
  if (!byKind.size) out.push('No resets, drops or retransmission bursts.');
  for (const [kind, list] of byKind) {
    const first = list[0]!;
    out.push('', `== ${TITLES[kind] ?? kind}: ${list.length} incident${list.length > 1 ? 's' : ''}`);
    const places = new Map<string, number>();
    for (const i of list) places.set(i.title, (places.get(i.title) ?? 0) + 1);
    if (kind === 'drop') for (const [title, n] of places) out.push(`  ${n > 1 ? `${n} flows: ` : ''}${title}`);
    const text = explains.get(first.flowId);
    if (kind !== 'drop' && text) {
      out.push(`  flow ${first.flowId} (hoptrace explain ${first.flowId}):`);
      for (const line of text) out.push(`  ${line}`);
    } else if (kind !== 'drop') {
      out.push(`  ${first.title}`, ...first.evidence.map((e, n) => `    ${n + 1}. ${e}`));
      if (first.fix) out.push(`    Fix: ${first.fix}`);
    }
  }
  const slow = latency.segments.filter((s) => s.p50Us >= slowUs && s.samples >= 5).sort((a, b) => b.p50Us - a.p50Us);
  out.push('', `== Slow hops (p50 >= ${humanUs(slowUs)}) over ${latency.flows} flows`);
  if (!slow.length) out.push('  none');
  for (const s of slow.slice(0, 5)) out.push(`  ${s.direction === 'forward' ? 'client->server' : 'server->client'} ${s.from} -> ${s.to}: p50 ${humanUs(s.p50Us)}, p99 ${humanUs(s.p99Us)} over ${s.samples} packets${s.crossNode ? ' (between nodes, clocks corrected)' : ''}`);
  const fast = latency.segments.filter((s) => s.p50Us < slowUs && s.samples >= 5);
  if (slow.length && fast.length) out.push(`  every other segment: p50 under ${humanUs(Math.max(...fast.map((s) => s.p50Us)))}`);
  return `${out.join('\n').trimStart()}\n`;
}

export function registerReportCommand(program: Command, loadCfg: () => Config): void {
  program
    .command('report')
    .description('what happened in a time range: verdicts by kind, the first explained in full, and the slowest hops')
    .option('--since <time>', 'from: RFC 3339, epoch ms, or a duration before now (15m, 2h)', '1h')
    .option('--until <time>', 'to')
    .option('--slow-ms <ms>', 'segments slower than this at p50 are listed', '1')
    .option('--service <ip>', 'latency over flows to this service VIP (or any address they had) only')
    .option('--latency-since <time>', 'latency over this window instead (default: --since)')
    .option('--latency-until <time>', 'end of that window (default: --until)')
    .option('--api <url>', 'API base URL (default: http://HOPTRACE_API_HOST:HOPTRACE_API_PORT)')
    .action(async (o: { since: string; until?: string; slowMs: string; service?: string; latencySince?: string; latencyUntil?: string; api?: string }) => {
      const base = o.api ?? defaultApiUrl(loadCfg());
      const { incidents } = await apiGet<{ incidents: Incident[] }>(base, '/api/v1/incidents', { since: o.since, until: o.until, limit: '1000' });
      const explains = new Map<string, string[]>();
      const firsts = new Map<string, Incident>();
      for (const i of incidents) if (i.kind !== 'drop') firsts.set(i.kind, i);
      for (const i of firsts.values()) explains.set(i.flowId, (await apiGet<{ text: string[] }>(base, `/api/v1/flows/${i.flowId}/explain`)).text);
      const latency = await apiGet<LatencyReport>(base, '/api/v1/reports/latency', { since: o.latencySince ?? o.since, until: o.latencyUntil ?? o.until, service: o.service });
      process.stdout.write(formatReport(incidents, explains, latency, Number(o.slowMs) * 1000));
    });
}
