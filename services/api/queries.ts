/**
 * All of the API's SQL, and the small store interface the routes use (tests fake it).
 *
 * Values reach SQL only through shared/sql.ts (`str`, `uint`), after the routes have
 * validated them: the local ClickHouse (18.16) has no server-side query parameters.
 * The SQL sticks to what both 18.16 and current ClickHouse accept.
 *
 * Both tables are ReplacingMergeTree: a redelivered row collapses only at merge time,
 * so every read of whole rows uses FINAL. flow_parts holds partial summaries, one per
 * (flow_id, part_key); a flow's summary is their sum.
 */
import type { ClickHouseClient } from '@clickhouse/client';
import { describeError, HopError } from '../shared/errors.js';
import { str, uint } from '../shared/sql.js';
import { EVENT_READ_COLUMNS, queryEventRows } from '../shared/stored-events.js';
import { isoNs, nsToUs, type Endpoint, type TimelineRow } from '../correlator/timeline.js';

/** IP protocol names the API accepts and prints. */
export const PROTOCOLS: Readonly<Record<string, number>> = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 };
const PROTOCOL_NAMES = new Map(Object.entries(PROTOCOLS).map(([k, v]) => [v, k]));

export function protocolName(proto: number): string {
  return PROTOCOL_NAMES.get(proto) ?? String(proto);
}

/** A validated flow filter. Every field is already checked and canonical. */
export interface FlowFilter {
  /** Canonical IP text (shared/sql.ts canonicalIp); matches either endpoint. */
  addr?: string;
  /** Matches either endpoint's port. */
  port?: number;
  /** The flow has at least one event recorded on this node. */
  node?: string;
  /** IP protocol number. */
  proto?: number;
  /** The flow's last event is at or after this time (ns since the epoch). */
  sinceNs?: bigint;
  /** The flow's first event is at or before this time (ns since the epoch). */
  untilNs?: bigint;
  limit: number;
}

/** One flow's summary, summed over its partial rows. */
export interface FlowSummary {
  /** 53-bit flow id (shared/flowkey.ts), as a decimal string. */
  flowId: string;
  proto: number;
  protoName: string;
  /** The client endpoint as the flow's earliest node saw it (canonical order when the handshake was not seen). */
  a: Endpoint;
  b: Endpoint;
  /** First and last event, ns since the epoch (decimal strings), and the same as RFC 3339. */
  firstTsNs: string;
  lastTsNs: string;
  first: string;
  last: string;
  durationUs: number;
  events: number;
  packets: number;
  bytes: number;
  drops: number;
  resets: number;
  retrans: number;
  /** Nodes the flow crossed, sorted. */
  nodes: string[];
}

/** A validated latency-report filter. */
export interface ReportFilter {
  /** Canonical IP: flows that had this address at any hop (a service VIP, a pod IP...). */
  service?: string;
  port?: number;
  /** Pod name or network namespace name one of the flow's events was seen in. */
  pod?: string;
  node?: string;
  sinceNs?: bigint;
  untilNs?: bigint;
  maxFlows: number;
  /** Most event rows read. */
  maxRows: number;
}

/** A validated incident filter. */
export interface IncidentFilter {
  kind?: string;
  namespace?: string;
  pod?: string;
  node?: string;
  /** Canonical IP: incidents of flows that had this address at any hop. */
  service?: string;
  sinceNs?: bigint;
  untilNs?: bigint;
  limit: number;
}

/** A stored incident (a verdict on a flow). */
export interface Incident {
  flowId: string;
  key: string;
  kind: string;
  tsNs: string;
  time: string;
  node: string;
  netns: string;
  pod: string;
  place: string;
  skState: string;
  reason: number;
  reasonName: string;
  trigger: unknown;
  title: string;
  evidence: string[];
  fix: string | null;
  /** API paths of the flow's timeline and explanation. */
  links: { timeline: string; path: string; explain: string };
}

export type PingResult = { ok: true } | { ok: false; error: string };

/** What the routes need from storage. */
export interface FlowStore {
  /** Where the data lives, for messages: the ClickHouse URL without credentials. */
  readonly where: string;
  ping(timeoutMs: number): Promise<PingResult>;
  listFlows(filter: FlowFilter): Promise<FlowSummary[]>;
  getFlow(flowId: bigint): Promise<FlowSummary | null>;
  /** The flow's first `limit` events in time order (fewer when it has fewer), from around the span its summary covers or from all days (FlowSpan). */
  flowEvents(flowId: bigint, limit: number, span: FlowSpan): Promise<TimelineRow[]>;
  /** Events of the most recent flows matching the filter, grouped by flow (at most maxRows in all). */
  reportEvents(filter: ReportFilter): Promise<{ flows: TimelineRow[][]; truncated: boolean }>;
  listIncidents(filter: IncidentFilter): Promise<Incident[]>;
}

// ---------------------------------------------------------------- SQL

const SUMMARY_COLUMNS = `toString(flow_id) AS flowId,
  any(proto) AS protoNum,
  argMin(a_addr, first_ts_ns) AS aAddr,
  argMin(a_port, first_ts_ns) AS aPort,
  argMin(b_addr, first_ts_ns) AS bAddr,
  argMin(b_port, first_ts_ns) AS bPort,
  toString(min(first_ts_ns)) AS firstNs,
  toString(max(last_ts_ns)) AS lastNs,
  toString(sum(events)) AS nEvents,
  toString(sum(packets)) AS nPackets,
  toString(sum(bytes)) AS nBytes,
  toString(sum(drops)) AS nDrops,
  toString(sum(resets)) AS nResets,
  toString(sum(retrans)) AS nRetrans,
  groupUniqArrayArray(nodes) AS nodeList`;

/** Row shape of SUMMARY_COLUMNS in JSONEachRow. */
interface SummaryRow {
  flowId: string;
  protoNum: number;
  aAddr: string;
  aPort: number;
  bAddr: string;
  bPort: number;
  firstNs: string;
  lastNs: string;
  nEvents: string;
  nPackets: string;
  nBytes: string;
  nDrops: string;
  nResets: string;
  nRetrans: string;
  nodeList: string[];
}


/**
 * Conditions on a partial row. A flow's partials can differ in endpoints (each node
 * sees the flow's tuple as NAT left it there), so a flow matches when any one of its
 * partials does.
 */
function flowConditions(f: FlowFilter): string[] {
  const c: string[] = [];
  if (f.addr !== undefined) c.push(`(a_addr = ${str(f.addr)} OR b_addr = ${str(f.addr)})`);
  if (f.port !== undefined) c.push(`(a_port = ${uint(f.port)} OR b_port = ${uint(f.port)})`);
  if (f.proto !== undefined) c.push(`proto = ${uint(f.proto)}`);
  return c;
}

function where(conds: string[], clause: 'WHERE' | 'PREWHERE' = 'WHERE'): string {
  return conds.length ? `${clause} ${conds.join('\n  AND ')}` : '';
}

/**
 * Flows matching the filter, most recently active first. Each condition holds for a
 * flow when it holds for any one of its partials, so each pre-selects flow ids
 * (cheap: no FINAL); `until` needs the flow's first event, so it is checked on the sum.
 * The summary's endpoints are those of the flow's earliest partial: the client side.
 */
export function listFlowsSql(f: FlowFilter): string {
  const conds: string[] = [];
  const any = (cond: string) => conds.push(`flow_id IN (SELECT flow_id FROM flow_parts WHERE ${cond})`);
  for (const c of flowConditions(f)) any(c);
  if (f.node !== undefined) any(`has(nodes, ${str(f.node)})`);
  if (f.sinceNs !== undefined) any(`last_ts_ns >= ${uint(f.sinceNs)}`);
  const having = f.untilNs !== undefined ? `HAVING min(first_ts_ns) <= ${uint(f.untilNs)}` : '';
  // Every condition is on flow_id, in the sorting key: PREWHERE is safe with FINAL (flowSql).
  return `SELECT ${SUMMARY_COLUMNS}
FROM flow_parts FINAL
${where(conds, 'PREWHERE')}
GROUP BY flow_id
${having}
ORDER BY max(last_ts_ns) DESC, flow_id DESC
LIMIT ${uint(f.limit)}`;
}

/** Events of the most recent flows matching a report filter, flow by flow. */
export function reportEventsSql(f: ReportFilter): string {
  const conds: string[] = [];
  const any = (cond: string) => conds.push(`flow_id IN (SELECT flow_id FROM flow_parts WHERE ${cond})`);
  if (f.service !== undefined) any(`(a_addr = ${str(f.service)} OR b_addr = ${str(f.service)})`);
  if (f.port !== undefined) any(`(a_port = ${uint(f.port)} OR b_port = ${uint(f.port)})`);
  if (f.node !== undefined) any(`has(nodes, ${str(f.node)})`);
  if (f.sinceNs !== undefined) any(`last_ts_ns >= ${uint(f.sinceNs)}`);
  if (f.untilNs !== undefined) any(`first_ts_ns <= ${uint(f.untilNs)}`);
  if (f.pod !== undefined) conds.push(`flow_id IN (SELECT flow_id FROM hop_events WHERE pod = ${str(f.pod)} OR netns = ${str(f.pod)})`);
  return `SELECT flow_id AS fid, ${EVENT_READ_COLUMNS}
FROM hop_events FINAL
PREWHERE flow_id IN (
  SELECT flow_id FROM (
    SELECT flow_id, max(last_ts_ns) AS latest FROM flow_parts ${where(conds)} GROUP BY flow_id ORDER BY latest DESC LIMIT ${uint(f.maxFlows)}
  )
)
ORDER BY fid, wall_ts_ns
LIMIT ${uint(f.maxRows + 1)}`;
}

export function listIncidentsSql(f: IncidentFilter): string {
  // After FINAL (WHERE, which 18.16 leaves there): a verdict retracted by a later judgement is out.
  const c: string[] = ['retracted = 0'];
  if (f.kind !== undefined) c.push(`kind = ${str(f.kind)}`);
  if (f.namespace !== undefined) c.push(`netns = ${str(f.namespace)}`);
  if (f.pod !== undefined) c.push(`(pod = ${str(f.pod)} OR netns = ${str(f.pod)})`);
  if (f.node !== undefined) c.push(`node = ${str(f.node)}`);
  if (f.sinceNs !== undefined) c.push(`ts_ns >= ${uint(f.sinceNs)}`);
  if (f.untilNs !== undefined) c.push(`ts_ns <= ${uint(f.untilNs)}`);
  if (f.service !== undefined) c.push(`flow_id IN (SELECT flow_id FROM flow_parts WHERE a_addr = ${str(f.service)} OR b_addr = ${str(f.service)})`);
  return `SELECT toString(flow_id) AS flowId, incident_key AS ikey, kind AS ikind, toString(ts_ns) AS tsNs, node AS inode, netns AS inetns, pod AS ipod, place AS iplace,
  sk_state AS skState, reason AS ireason, reason_name AS reasonName, trigger AS itrigger, title AS ititle, evidence AS ievidence, fix AS ifix
FROM incidents FINAL
${where(c)}
ORDER BY ts_ns DESC, flow_id, incident_key
LIMIT ${uint(f.limit)}`;
}

interface IncidentSqlRow {
  flowId: string;
  ikey: string;
  ikind: string;
  tsNs: string;
  inode: string;
  inetns: string;
  ipod: string;
  iplace: string;
  skState: string;
  ireason: number;
  reasonName: string;
  itrigger: string;
  ititle: string;
  ievidence: string;
  ifix: string;
}

function parseJson<T>(s: string, fallback: T): T {
  try {
    return JSON.parse(s) as T;
  } catch {
    return fallback;
  }
}

export function flowLinks(flowId: string) {
  const base = `/api/v1/flows/${flowId}`;
  return { timeline: `${base}/timeline`, path: `${base}/path`, explain: `${base}/explain` };
}

function toIncident(r: IncidentSqlRow): Incident {
  return {
    flowId: r.flowId,
    key: r.ikey,
    kind: r.ikind,
    tsNs: r.tsNs,
    time: isoNs(BigInt(r.tsNs)),
    node: r.inode,
    netns: r.inetns,
    pod: r.ipod,
    place: r.iplace,
    skState: r.skState,
    reason: Number(r.ireason),
    reasonName: r.reasonName,
    trigger: parseJson(r.itrigger, null),
    title: r.ititle,
    evidence: parseJson<string[]>(r.ievidence, []),
    fix: r.ifix || null,
    links: flowLinks(r.flowId),
  };
}

/*
 * One flow's rows: PREWHERE, not WHERE. ClickHouse does not move a WHERE of a FINAL query
 * to PREWHERE, so it reads every column of each granule the flow id may be in (one per
 * part, in every partition) before filtering: ~65 MiB per timeline at 100M events
 * (bench/timeline-lookup.ts). PREWHERE reads flow_id there and the other columns only
 * for the flow's rows. Safe with FINAL because flow_id is in the sorting key: all copies
 * of a row have the same flow_id, so the filter keeps or drops them together.
 */
export function flowSql(flowId: bigint): string {
  return `SELECT ${SUMMARY_COLUMNS}
FROM flow_parts FINAL
PREWHERE flow_id = ${uint(flowId)}
GROUP BY flow_id`;
}

/**
 * Where a flow's events are read from. `summary`: the span of time its summary covers
 * (flow_parts), an hour wider each side: events that count in no summary, such as a
 * socket's state change before its port is bound, sit just outside that span. Only the
 * parts whose wall_ts_ns range meets it are read (hop_events is partitioned by an
 * expression of wall_ts_ns: stored-events.ts HOP_EVENTS_PARTITION), so a lookup grows
 * neither with retention nor with the parts of its own day. `all`: every part, for a
 * flow with no summary yet.
 */
export type FlowSpan = 'summary' | 'all';

const SUMMARY_MARGIN_NS = 3_600_000_000_000n;

/**
 * The flow's span from its summary rows, as scalar subqueries: ClickHouse evaluates them
 * before it picks parts, so the events statement needs no round trip for the summary
 * first and can run beside it. No FINAL: a redelivered partial changes neither end. A
 * flow with no summary gets the first hour of 1970 here, so no events: read it with `all`.
 */
function summarySpanSql(flowId: bigint): string {
  const m = SUMMARY_MARGIN_NS.toString();
  const end = (ns: string) => `(SELECT ${ns} FROM flow_parts PREWHERE flow_id = ${uint(flowId)})`;
  return `wall_ts_ns BETWEEN ${end(`greatest(min(first_ts_ns), ${m}) - ${m}`)} AND ${end(`max(last_ts_ns) + ${m}`)}`;
}

export function flowEventsSql(flowId: bigint, limit: number, span: FlowSpan): string {
  return `SELECT ${EVENT_READ_COLUMNS}
FROM hop_events FINAL
PREWHERE flow_id = ${uint(flowId)}${span === 'summary' ? `\nWHERE ${summarySpanSql(flowId)}` : ''}
ORDER BY wall_ts_ns, agent, boot, seq
LIMIT ${uint(limit)}`;
}

function toSummary(r: SummaryRow): FlowSummary {
  const first = BigInt(r.firstNs);
  const last = BigInt(r.lastNs);
  return {
    flowId: r.flowId,
    proto: r.protoNum,
    protoName: protocolName(r.protoNum),
    a: { addr: r.aAddr, port: r.aPort },
    b: { addr: r.bAddr, port: r.bPort },
    firstTsNs: r.firstNs,
    lastTsNs: r.lastNs,
    first: isoNs(first),
    last: isoNs(last),
    durationUs: nsToUs(last - first),
    events: Number(r.nEvents),
    packets: Number(r.nPackets),
    bytes: Number(r.nBytes),
    drops: Number(r.nDrops),
    resets: Number(r.nResets),
    retrans: Number(r.nRetrans),
    nodes: [...r.nodeList].sort(),
  };
}

// ---------------------------------------------------------------- errors

const NETWORK_CODES = /^(ECONNREFUSED|ECONNRESET|ECONNABORTED|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|EPIPE|ABORT_ERR|UND_ERR_\w+)$/;

/** ClickHouse did not answer (connection, timeout), as opposed to answering with an error. */
function isUnreachable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && NETWORK_CODES.test(code)) return true;
  return err.name === 'AbortError' || err.name === 'TimeoutError' || /^Timeout error|socket hang up/i.test(err.message);
}

/** ClickHouse error message, first line only, minus the 18.16 decoration. */
function serverMessage(err: Error): string {
  const line = err.message.split('\n')[0] ?? '';
  return line.replace(/, e\.what\(\) = DB::Exception$/, '').replace(/e\.displayText\(\) = /, '').slice(0, 300);
}

/** ClickHouse codes meaning the schema is not there yet: UNKNOWN_TABLE, UNKNOWN_DATABASE. */
const MISSING_SCHEMA = /^Code: (60|81)\b/;

export function clickhouseError(err: unknown, where: string, what: string): HopError {
  if (err instanceof HopError) return err;
  if (isUnreachable(err)) return new HopError('HOP_CLICKHOUSE_UNREACHABLE', `ClickHouse at ${where} is unreachable: ${describeError(err)}`, true, { cause: err });
  // 18.16 answers "Code: 60, e.displayText() = DB::Exception: ..." (the client parses only newer formats).
  const msg = err instanceof Error ? serverMessage(err) : String(err).slice(0, 300);
  const hint = MISSING_SCHEMA.test(msg) ? ' (has the correlator created the schema yet?)' : '';
  return new HopError('HOP_CLICKHOUSE_QUERY', `ClickHouse at ${where}: ${what} failed: ${msg}${hint}`, false, { cause: err });
}

/** The URL without user, password, query or fragment, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

// ---------------------------------------------------------------- store

export function createFlowStore(ch: ClickHouseClient, clickhouseUrl: string): FlowStore {
  const at = redactUrl(clickhouseUrl);

  async function rows<T>(query: string, what: string): Promise<T[]> {
    try {
      const rs = await ch.query({
        query,
        format: 'JSONEachRow',
        // UInt64 as JSON strings: ns timestamps and ids exceed 2^53.
        clickhouse_settings: { output_format_json_quote_64bit_integers: 1 },
      });
      return await rs.json<T>();
    } catch (err) {
      throw clickhouseError(err, at, what);
    }
  }

  /** Event rows come as RowBinary (shared/stored-events.ts): hop_events' packed column is binary. */
  async function events(query: string, withFid: boolean, what: string): Promise<(TimelineRow & { fid: string })[]> {
    try {
      return await queryEventRows(ch, query, withFid as true);
    } catch (err) {
      throw clickhouseError(err, at, what);
    }
  }

  return {
    where: at,
    async ping(timeoutMs) {
      try {
        const r = await ch.ping({ select: false, abort_signal: AbortSignal.timeout(timeoutMs) });
        return r.success ? { ok: true } : { ok: false, error: describeError(r.error) };
      } catch (err) {
        return { ok: false, error: describeError(err) };
      }
    },
    async listFlows(filter) {
      return (await rows<SummaryRow>(listFlowsSql(filter), 'list flows')).map(toSummary);
    },
    async getFlow(flowId) {
      const [r] = await rows<SummaryRow>(flowSql(flowId), `read flow ${flowId}`);
      return r ? toSummary(r) : null;
    },
    async flowEvents(flowId, limit, span) {
      return events(flowEventsSql(flowId, limit, span), false, `read events of flow ${flowId}`);
    },
    async listIncidents(filter) {
      return (await rows<IncidentSqlRow>(listIncidentsSql(filter), 'list incidents')).map(toIncident);
    },
    async reportEvents(filter) {
      const all = await events(reportEventsSql(filter), true, 'read events for a latency report');
      const truncated = all.length > filter.maxRows;
      if (truncated) all.length = filter.maxRows;
      const byFlow = new Map<string, TimelineRow[]>();
      for (const r of all) {
        let list = byFlow.get(r.fid);
        if (!list) byFlow.set(r.fid, (list = []));
        list.push(r);
      }
      return { flows: [...byFlow.values()], truncated };
    },
  };
}
