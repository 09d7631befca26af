/** `hoptrace incidents` and `hoptrace explain`: post-incident forensics from the terminal. */
import type { Command } from 'commander';
import type { Incident } from '../api/queries.js';
import type { Config } from '../shared/config.js';
import { apiGet, defaultApiUrl, table } from './query.js';

interface IncidentsResponse {
  incidents: Incident[];
  count: number;
  truncated: boolean;
}

export function formatIncidents(r: IncidentsResponse): string {
  if (!r.incidents.length) return 'no incidents match\n';
  const rows = r.incidents.map((i) => [i.time.replace('T', ' ').slice(0, 23), i.kind, i.place, i.skState || '-', i.reasonName || String(i.reason || '-'), i.flowId, i.title]);
  const more = r.truncated ? '\n(more incidents match: narrow the query or raise --limit)' : '';
  return `${table(['TIME (UTC)', 'KIND', 'WHERE', 'STATE', 'REASON', 'FLOW', 'WHAT'], rows)}\n${r.count} incident(s); hoptrace explain <FLOW> for the evidence${more}\n`;
}

export function registerForensicsCommands(program: Command, loadCfg: () => Config): void {
  const apiHelp = 'API base URL (default: http://HOPTRACE_API_HOST:HOPTRACE_API_PORT)';
  program
    .command('incidents')
    .description('resets, drops and retransmission bursts with their verdicts, newest first')
    .option('--type <kind>', 'nat_bypass_reset, reset_refused, reset_no_socket, reset_app_abort, reset_other, reset_received, drop, retrans_burst')
    .option('--namespace <name>', 'network namespace where it happened')
    .option('--pod <name>', 'pod (or namespace name) where it happened')
    .option('--service <ip>', 'service VIP or any address the flow had')
    .option('--node <name>', 'node where it happened')
    .option('--since <time>', 'at or after: RFC 3339, epoch ms, or a duration before now (15m, 2h)')
    .option('--until <time>', 'at or before')
    .option('--limit <n>', 'most incidents shown (default 100)')
    .option('--api <url>', apiHelp)
    .option('--json', 'print the API response as JSON')
    .action(async (o: { type?: string; namespace?: string; pod?: string; service?: string; node?: string; since?: string; until?: string; limit?: string; api?: string; json?: boolean }) => {
      const r = await apiGet<IncidentsResponse>(o.api ?? defaultApiUrl(loadCfg()), '/api/v1/incidents', {
        type: o.type,
        namespace: o.namespace,
        pod: o.pod,
        service: o.service,
        node: o.node,
        since: o.since,
        until: o.until,
        limit: o.limit,
      });
      process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : formatIncidents(r));
    });
  program
    .command('explain')
    .description('one flow in words: its path, every verdict on it with the evidence, and the fix')
    .argument('<flowId>', 'flow id (from `hoptrace flows` or `hoptrace incidents`)')
    .option('--api <url>', apiHelp)
    .option('--json', 'print the API response as JSON')
    .action(async (flowId: string, o: { api?: string; json?: boolean }) => {
      const r = await apiGet<{ text: string[] }>(o.api ?? defaultApiUrl(loadCfg()), `/api/v1/flows/${encodeURIComponent(flowId)}/explain`);
      process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : `${r.text.join('\n')}\n`);
    });
}
