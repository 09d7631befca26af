/**
 * `hoptrace flows` and `hoptrace timeline`: terminal clients of the query API
 * (services/api). They send the flags as they are and let the API validate them, so
 * the CLI and the API accept exactly the same values; a 400 naming
 * `querystring/port` is reported as `--port`.
 */
import type { Command } from 'commander';
import type { Config } from '../shared/config.js';
import { describeError, HopError, type ErrorCode } from '../shared/errors.js';
import type { FlowSummary } from '../api/queries.js';
import type { Timeline, TimelineEvent } from '../correlator/timeline.js';

interface FlowsResponse {
  flows: FlowSummary[];
  count: number;
  limit: number;
  truncated: boolean;
}

interface TimelineResponse {
  flow: FlowSummary | null;
  timeline: Timeline | null;
  truncated: boolean;
  eventLimit: number;
  /** The connection's other flows read with this one (correlator/handshake.ts); absent from older APIs. */
  joined?: string[];
}

/** The line that says which other flows of the connection were read with this one, or ''. */
export function joinedLine(joined: readonly string[] | undefined): string {
  return joined?.length ? `with flow ${joined.join(', ')}: the same connection, recorded apart where its SYN-ACK did not arrive` : '';
}

const REQUEST_TIMEOUT_MS = 30_000;

/** Error codes the API answers with that the CLI passes on as they are. */
const API_CODES: readonly ErrorCode[] = ['HOP_BAD_REQUEST', 'HOP_NOT_FOUND', 'HOP_CLICKHOUSE_UNREACHABLE', 'HOP_CLICKHOUSE_QUERY'];

/** Default API base URL from the API's own listen options (a wildcard listen address means loopback). */
export function defaultApiUrl(cfg: Pick<Config, 'apiHost' | 'apiPort'>): string {
  let host = cfg.apiHost;
  if (host === '0.0.0.0' || host === '') host = '127.0.0.1';
  if (host === '::') host = '::1';
  return `http://${host.includes(':') ? `[${host}]` : host}:${cfg.apiPort}`;
}

/** GETs `path` from the API and returns its JSON; errors name the API and its address. */
export async function apiGet<T>(base: string, path: string, params: Record<string, string | undefined> = {}): Promise<T> {
  let url: URL;
  try {
    url = new URL(base.replace(/\/+$/, '') + path);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http(s)');
  } catch {
    throw new HopError('HOP_CONFIG_INVALID', `--api ${JSON.stringify(base)} is not an http(s) URL`);
  }
  for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, v);
  let res: Response;
  try {
    res = await fetch(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (err) {
    const why = err instanceof Error && err.cause ? describeError(err.cause) : describeError(err);
    throw new Error(`cannot reach the hoptrace API at ${url.origin}: ${why} (is \`hoptrace api\` running? else pass --api URL)`);
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`the hoptrace API at ${url.origin} answered ${res.status} with something other than JSON: ${sanitize(text.slice(0, 200))}`);
  }
  if (!res.ok) {
    const b = body as { code?: unknown; message?: unknown };
    const message = typeof b.message === 'string' ? cliFieldNames(sanitize(b.message)) : `HTTP ${res.status}`;
    const code = API_CODES.find((c) => c === b.code);
    if (code) throw new HopError(code, message);
    throw new Error(`the hoptrace API at ${url.origin} answered ${res.status}: ${message}`);
  }
  return body as T;
}

/** `querystring/port must be <= 65535` -> `--port must be <= 65535`. */
function cliFieldNames(message: string): string {
  return message.replace(/querystring\/([A-Za-z]+)/g, '--$1').replace(/params\/flowId/g, '<flowId>');
}

// ---------------------------------------------------------------- formatting

/** Control characters (terminal escapes) from stored strings are shown, not obeyed. */
function sanitize(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** Aligned columns; `right` lists the columns to right-align (numbers). */
export function table(headers: string[], rows: string[][], right: ReadonlySet<number> = new Set()): string {
  const cells = [headers, ...rows.map((r) => r.map(sanitize))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : i === r.length - 1 ? c : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** µs as a short human duration: `850 µs`, `12.345 ms`, `3.2 s`. */
export function humanUs(us: number): string {
  if (us < 1000) return `${Number(us.toFixed(3))} µs`;
  if (us < 1_000_000) return `${Number((us / 1000).toFixed(3))} ms`;
  return `${Number((us / 1_000_000).toFixed(3))} s`;
}

function ep(e: { addr: string; port: number }): string {
  const a = sanitize(e.addr);
  return a.includes(':') ? `[${a}]:${e.port}` : `${a}:${e.port}`;
}

/** RFC 3339 ns string -> `2024-05-01 12:00:00.123456` (UTC, µs). */
function shortTime(iso: string): string {
  return iso.replace('T', ' ').replace(/(\.\d{6})\d*Z$/, '$1');
}

export function formatFlows(r: FlowsResponse): string {
  if (r.flows.length === 0) return 'no flows match\n';
  const rows = r.flows.map((f) => [
    f.flowId,
    f.protoName,
    ep(f.a),
    ep(f.b),
    shortTime(f.first),
    humanUs(f.durationUs),
    String(f.events),
    String(f.packets),
    String(f.bytes),
    String(f.drops),
    String(f.resets),
    String(f.retrans),
    f.nodes.join(','),
  ]);
  const out = table(['FLOW', 'PROTO', 'A', 'B', 'FIRST (UTC)', 'DURATION', 'EVENTS', 'PKTS', 'BYTES', 'DROPS', 'RSTS', 'RETX', 'NODES'], rows, new Set([5, 6, 7, 8, 9, 10, 11]));
  const more = r.truncated ? `\n(first ${r.limit} flows shown; more match: narrow the query or raise --limit)` : '';
  return `${out}\n${r.flows.length} flow(s)${more}\n`;
}

function detail(e: TimelineEvent): string {
  const parts: string[] = [];
  if (e.skState) parts.push(`state=${e.skState}`);
  if (e.reason) parts.push(`reason=${e.reason}`);
  if (e.ipId) parts.push(`ipid=${e.ipId}`);
  if (e.ct) {
    parts.push(`ct=${e.ct.id}`);
    if (e.ct.reply) parts.push(`reply=${ep(e.ct.reply.src)}->${ep(e.ct.reply.dst)}`);
  }
  return parts.join(' ');
}

export function formatTimeline(r: TimelineResponse): string {
  const lines: string[] = [];
  const f = r.flow;
  const t = r.timeline;
  if (f) {
    const route = t ? `${ep(t.from)} -> ${ep(t.to)}${t.orientation === 'syn' ? '' : ' (no SYN seen: canonical order)'}` : `${ep(f.a)} <-> ${ep(f.b)}`;
    lines.push(`flow ${f.flowId}  ${f.protoName}  ${route}`);
    lines.push(`  ${shortTime(f.first)} .. ${shortTime(f.last)} UTC  (${humanUs(f.durationUs)})`);
    lines.push(`  events ${f.events}  packets ${f.packets}  bytes ${f.bytes}  drops ${f.drops}  resets ${f.resets}  retrans ${f.retrans}`);
    lines.push(`  nodes ${sanitize(f.nodes.join(', '))}`);
    if (joinedLine(r.joined)) lines.push(`  ${joinedLine(r.joined)}`);
  } else if (t) {
    lines.push(`flow  ${ep(t.from)} -> ${ep(t.to)}  (summary not written yet)`);
  }
  if (!t) {
    lines.push('', 'no events stored for this flow yet');
    return `${lines.join('\n')}\n`;
  }
  lines.push('');
  const rows = t.events.map((e) => [
    String(e.index),
    e.sinceStartUs.toFixed(3),
    e.sincePrevUs.toFixed(3),
    e.node,
    e.pod || e.netns,
    e.ifname,
    e.hook,
    e.kind,
    e.direction === 'forward' ? '->' : '<-',
    e.tcpFlags,
    String(e.tcpSeq),
    String(e.tcpAck),
    String(e.payloadLen),
    e.packet === null ? '' : String(e.packet),
    detail(e),
  ]);
  lines.push(table(['#', '+START µs', '+PREV µs', 'NODE', 'NETNS/POD', 'IF', 'HOOK', 'KIND', 'DIR', 'FLAGS', 'SEQ', 'ACK', 'LEN', 'PKT', 'DETAIL'], rows, new Set([0, 1, 2, 10, 11, 12, 13])));
  if (r.truncated) lines.push(`(first ${r.eventLimit} events shown; the flow has more)`);
  if (t.duplicates) lines.push(`(${t.duplicates} duplicate event(s) ignored)`);

  const multi = t.packets.filter((p) => p.hops.length > 1);
  if (multi.length) {
    lines.push('', 'packets seen at several hops (+latency of each hop; * = across nodes, includes their clock offset):');
    for (const p of multi) {
      const hops = p.hops
        .map((h) => `${h.deltaUs === null ? '' : `+${humanUs(h.deltaUs)}${h.crossNode ? '*' : ''} `}${sanitize(`${h.node}/${h.ifname || '-'} ${h.hook}`)}`)
        .join('  ');
      const what = `${p.direction === 'forward' ? '->' : '<-'} ${p.tcpFlags || '-'} seq ${p.tcpSeq} len ${p.payloadLen}`;
      lines.push(`  pkt ${p.index} ${what}: ${hops}  (total ${humanUs(p.totalUs)}${p.dropped ? ', DROPPED' : ''})`);
    }
  }
  // Stored strings are sanitised where they are interpolated (ep, table, hops).
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------- commands

interface FlowsOpts {
  addr?: string;
  port?: string;
  node?: string;
  proto?: string;
  since?: string;
  until?: string;
  limit?: string;
  api?: string;
  json?: boolean;
}

export function registerQueryCommands(program: Command, loadCfg: () => Config): void {
  const apiHelp = 'API base URL (default: http://HOPTRACE_API_HOST:HOPTRACE_API_PORT)';

  program
    .command('flows')
    .description('list flows from the API, most recently active first')
    .option('--addr <ip>', 'IPv4 or IPv6 address of either endpoint')
    .option('--port <port>', 'port of either endpoint')
    .option('--node <name>', 'a node the flow crossed')
    .option('--proto <proto>', 'tcp, udp, icmp, icmpv6, sctp or a protocol number')
    .option('--since <time>', 'active at or after: RFC 3339, epoch ms, or a duration before now (15m, 2h)')
    .option('--until <time>', 'started at or before: same forms as --since')
    .option('--limit <n>', 'most flows shown (default 100)')
    .option('--api <url>', apiHelp)
    .option('--json', 'print the API response as JSON')
    .action(async (o: FlowsOpts) => {
      const base = o.api ?? defaultApiUrl(loadCfg());
      const r = await apiGet<FlowsResponse>(base, '/api/v1/flows', {
        addr: o.addr,
        port: o.port,
        node: o.node,
        proto: o.proto,
        since: o.since,
        until: o.until,
        limit: o.limit,
      });
      process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : formatFlows(r));
    });

  program
    .command('timeline')
    .description("print one flow's timeline: every event in order, and each packet's hops with their latency")
    .argument('<flowId>', 'flow id (from `hoptrace flows`)')
    .option('--api <url>', apiHelp)
    .option('--json', 'print the API response as JSON')
    .action(async (flowId: string, o: { api?: string; json?: boolean }) => {
      const base = o.api ?? defaultApiUrl(loadCfg());
      // The id goes in the path: encode it so nothing but the API's own validation sees it.
      const r = await apiGet<TimelineResponse>(base, `/api/v1/flows/${encodeURIComponent(flowId)}/timeline`);
      process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : formatTimeline(r));
    });
}
