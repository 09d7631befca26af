/**
 * `hoptrace path` and `hoptrace latency`: a flow's cross-node path with the NAT at
 * each step and per-segment latency, and the latency report over many flows.
 */
import type { Command } from 'commander';
import type { FlowSummary } from '../api/queries.js';
import type { FlowPath, Segment } from '../correlator/path.js';
import { describeHop } from '../correlator/path.js';
import { exchangeLine } from '../correlator/explain.js';
import type { LatencyReport } from '../correlator/report.js';
import type { Config } from '../shared/config.js';
import { apiGet, defaultApiUrl, humanUs, joinedLine, table } from './query.js';

interface PathResponse {
  flow: FlowSummary | null;
  path: FlowPath;
  truncated: boolean;
  joined?: string[];
}

function segmentTable(segments: Segment[]): string {
  if (!segments.length) return '  (no packet was seen at two hook points)\n';
  const rows = segments.map((s) => [s.direction, s.from, s.to, String(s.samples), humanUs(s.p50Us), humanUs(s.p99Us), s.crossNode ? 'yes' : '']);
  return `${table(['dir', 'from', 'to', 'packets', 'p50', 'p99', 'cross-node'], rows, new Set([3, 4, 5]))}\n`;
}

function clockLines(clock: FlowPath['clock']): string {
  const skewed = clock.filter((c) => Math.abs(c.offsetUs) >= 1);
  if (!skewed.length) return '';
  return `clock offsets corrected: ${skewed.map((c) => `${c.node} ${c.offsetUs < 0 ? '-' : '+'}${humanUs(Math.abs(c.offsetUs))}${c.from ? ` (vs ${c.from.peer}, ${c.from.packets} packets)` : ''}`).join(', ')}\n`;
}

export function formatPath(r: PathResponse): string {
  const p = r.path;
  const out: string[] = [];
  if (p.client && p.server) out.push(`connection ${p.client.addr}:${p.client.port} -> ${p.server.addr}:${p.server.port}, ${p.packets} packets\n`);
  if (joinedLine(r.joined)) out.push(`${joinedLine(r.joined)}\n`);
  if (p.exchange) out.push(`${exchangeLine(p.exchange)}\n`);
  for (const dir of ['forward', 'reverse'] as const) {
    const hops = p.paths[dir];
    if (!hops.length) continue;
    out.push(`\n${dir === 'forward' ? 'client -> server' : 'server -> client'}:\n`);
    hops.forEach((h, i) => out.push(`  ${String(i + 1).padStart(2)}. ${describeHop(h)}\n`));
  }
  out.push('\nlatency per segment (clock-corrected):\n');
  out.push(segmentTable(p.segments));
  out.push(clockLines(p.clock));
  if (r.truncated) out.push('(the flow has more events than the API reads at once: the path covers the first ones)\n');
  return out.join('');
}

function exchangesLine(x: LatencyReport['exchanges']): string {
  if (!x) return '';
  const q = (v: { p50: number; p99: number }) => `p50 ${humanUs(v.p50)} p99 ${humanUs(v.p99)}`;
  return `first request and response of ${x.flows} flows: the client waited ${q(x.clientWaitUs)}; the server's share ${q(x.serverUs)}; the network's ${q(x.networkUs)}\n`;
}

export function formatLatency(r: LatencyReport & { truncated: boolean }): string {
  return `${r.flows} flows, ${r.packets} packets\n${exchangesLine(r.exchanges)}${segmentTable(r.segments)}${clockLines(r.clock)}${r.truncated ? '(more events matched than the API reads at once: partial report)\n' : ''}`;
}

export function registerPathCommands(program: Command, loadCfg: () => Config): void {
  const apiHelp = 'API base URL (default: http://HOPTRACE_API_HOST:HOPTRACE_API_PORT)';
  program
    .command('path')
    .description("print one flow's cross-node path: hops per direction, the NAT at each step, latency per segment")
    .argument('<flowId>', 'flow id (from `hoptrace flows`)')
    .option('--api <url>', apiHelp)
    .option('--json', 'print the API response as JSON')
    .action(async (flowId: string, o: { api?: string; json?: boolean }) => {
      const r = await apiGet<PathResponse>(o.api ?? defaultApiUrl(loadCfg()), `/api/v1/flows/${encodeURIComponent(flowId)}/path`);
      process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : formatPath(r));
    });
  program
    .command('latency')
    .description('latency report over a time range, by hop segment (slowest p99 first), clocks corrected')
    .option('--service <ip>', 'service VIP (or any address the flows had)')
    .option('--port <port>', 'a port the flows had')
    .option('--pod <name>', 'pod or network namespace the flows crossed')
    .option('--node <name>', 'a node the flows crossed')
    .option('--since <time>', 'active at or after: RFC 3339, epoch ms, or a duration before now (15m, 2h)')
    .option('--until <time>', 'started at or before')
    .option('--max-flows <n>', 'most recent flows analysed (default 2000)')
    .option('--api <url>', apiHelp)
    .option('--json', 'print the API response as JSON')
    .action(async (o: { service?: string; port?: string; pod?: string; node?: string; since?: string; until?: string; maxFlows?: string; api?: string; json?: boolean }) => {
      const r = await apiGet<LatencyReport & { truncated: boolean }>(o.api ?? defaultApiUrl(loadCfg()), '/api/v1/reports/latency', {
        service: o.service,
        port: o.port,
        pod: o.pod,
        node: o.node,
        since: o.since,
        until: o.until,
        maxFlows: o.maxFlows,
      });
      process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : formatLatency(r));
    });
}
