/**
 * Counts the correlator's join mistakes on lab traffic against ground truth that
 * does not come from hoptrace: the load balancer's own conntrack table (polled, and its
 * event stream, on node-lb) gives, for each connection, its client tuple and the tuple
 * the server side saw (after DNAT, and SNAT in snat mode).
 *
 * An event truly belongs to connection C when its tuple, either way round, is C's
 * client tuple or C's server-side tuple, and C is the latest connection on that tuple
 * started before the event. The correlator assigned it to C when its flow id is the
 * one holding most of C's client-side events. Precision = events assigned to the right
 * request / events assigned to any request; recall = events assigned to their right
 * request / events that belong to a request. Each request's path is also checked:
 * nodes in client -> server order, the right NAT at the step where the tuple changes.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { buildPath, type PathHop } from '../correlator/path.js';
import { latencyReport, type LatencyReport } from '../correlator/report.js';
import type { TimelineRow } from '../correlator/timeline.js';
import type { ClickHouseClient } from '../shared/clickhouse.js';
import type { Config } from '../shared/config.js';
import { createKafka, lagReader } from '../shared/kafka.js';
import { createLogger } from '../shared/log.js';
import { sleep } from '../shared/retry.js';
import { Kind } from '../shared/record.js';
import { uint } from '../shared/sql.js';
import { EVENT_READ_COLUMNS, queryEventRows } from '../shared/stored-events.js';
import { runRequests, type RequestResult } from './lab.js';
import { requireState } from './state.js';
import { nsRun } from './exec.js';
import type { LabState } from './state.js';

export interface JoinReport {
  /** Connections in the ground truth. */
  requests: number;
  /** Connections whose client-side events were found at all. */
  found: number;
  events: { belonging: number; assigned: number; correct: number };
  precision: number;
  recall: number;
  /** Requests whose path or NAT is wrong, with the first few reasons. */
  pathMistakes: number;
  /**
   * Requests whose path ends on a server-side tuple the truth never saw for any connection
   * (a mapping conntrack made and dropped between two polls, its events lost): no truth to
   * check them against, so neither right nor wrong.
   */
  pathUnverified: number;
  mistakes: string[];
  /** Latency by hop segment over the requests' flows, clocks corrected. */
  latency: LatencyReport;
}

const ORDER = ['node-a', 'node-lb', 'node-c'];
const key = (sa: string, sp: number, da: string, dp: number) => `${sa}:${sp}>${da}:${dp}`;
/** Node clocks and conntrack's timestamp differ a little: an event may precede its connection's NEW event by this much. */
const OWNER_SLACK_NS = 50_000_000n;

interface Tuple {
  src: { addr: string; port: number };
  dst: { addr: string; port: number };
}

/** One TCP connection through the VIP, as node-lb's conntrack announced it. */
export interface CtConnection {
  tsNs: bigint;
  client: { addr: string; port: number };
  /** The tuple the server side sees: after DNAT, and SNAT in snat mode (the last one, when a retransmitted SYN got a new mapping). */
  serverSide: Tuple;
  /** Earlier server-side tuples of the same connection: a SYN that went unanswered and was sent again can get a new SNAT port. */
  earlier: Tuple[];
}

/** A SYN retransmission comes within this long of the first, unanswered SYN. */
const SAME_CONNECTION_NS = 5_000_000_000n;

/**
 * Records every connection to the VIP from node-lb's conntrack table, emptied first and
 * polled while the requests run (`conntrack -L -o id`): ground truth that survives
 * client port reuse (a reused tuple's entry replaces the old one, so one look at the
 * end is not enough). And from its event stream (`conntrack -E`) at the same time: a
 * poll misses an entry that lives less than its period (a SYN sent again under SNAT
 * --random-fully can get a mapping that is gone by the next poll: 21 of 2,000 paths
 * disagreed with a poll-only truth on a loaded clean-clone test run), while the stream loses events to
 * ENOBUFS in bursts. Each catches what the other misses.
 */
export function recordConnections(state: LabState, everyMs = 150): { ready: Promise<void>; stop(): Promise<CtConnection[]> } {
  const netns = state.nodes['node-lb']!.netns;
  const seen = new Map<string, { firstNs: bigint; line: string }>();
  /** Entries seen with a reply (an entry never goes back to [UNREPLIED]). */
  const replied = new Set<string>();
  let stopping = false;
  const list = async () => (await nsRun(netns, 'conntrack', ['-L', '-p', 'tcp', '--orig-dst', state.vip.ip, '-o', 'id'], { allowFail: true })).stdout.split('\n');
  const idOf = (line: string) => /\bid=(\d+)/.exec(line)?.[1];
  const observe = (line: string): void => {
    const id = idOf(line);
    if (!id) return;
    if (!seen.has(id)) seen.set(id, { firstNs: BigInt(Date.now()) * 1_000_000n, line });
    if (!line.includes('[UNREPLIED]')) replied.add(id);
  };
  let markReady!: () => void;
  const ready = new Promise<void>((r) => (markReady = r));
  const poll = async () => {
    // Entries of earlier runs (TIME_WAIT) would stand for this run's reused ports: start
    // from an empty table (the lab's load balancer, between runs, has no live connection).
    await nsRun(netns, 'conntrack', ['-F'], { allowFail: true });
    const events = spawn('ip', ['netns', 'exec', netns, 'conntrack', '-E', '-e', 'NEW,UPDATE', '-p', 'tcp', '--orig-dst', state.vip.ip, '-o', 'id'], { stdio: ['ignore', 'pipe', 'ignore'] });
    events.on('error', () => undefined); // the polls still record
    createInterface({ input: events.stdout }).on('line', observe);
    markReady();
    try {
      // One more look after stop(): connections made since the last poll are still in the table.
      for (let last = false; !last; ) {
        last = stopping;
        for (const line of await list()) observe(line);
        if (!stopping) await sleep(everyMs);
      }
    } finally {
      events.kill();
    }
  };
  const running = poll();
  return {
    ready,
    async stop() {
      stopping = true;
      await running;
      const entries = [...seen].sort(([, a], [, b]) => (a.firstNs < b.firstNs ? -1 : a.firstNs > b.firstNs ? 1 : 0));
      const out: (CtConnection & { unanswered: boolean })[] = [];
      const latest = new Map<string, CtConnection & { unanswered: boolean }>();
      for (const [id, { firstNs: tsNs, line }] of entries) {
        const kv = [...line.matchAll(/\b(src|dst|sport|dport)=(\S+)/g)].map((m) => m[2]!);
        if (kv.length < 8) continue;
        const [os, , osp, , rs, rd, rsp, rdp] = kv as [string, string, string, string, string, string, string, string];
        const serverSide = { src: { addr: rd, port: Number(rdp) }, dst: { addr: rs, port: Number(rsp) } };
        const prev = latest.get(`${os}:${osp}`);
        const unanswered = !replied.has(id);
        if (prev && prev.unanswered && tsNs - prev.tsNs < SAME_CONNECTION_NS) {
          // A retransmitted SYN of the same connection that conntrack mapped anew (the first mapping never got a reply).
          prev.earlier.push(prev.serverSide);
          prev.serverSide = serverSide;
          prev.unanswered = unanswered;
          continue;
        }
        const c = { tsNs, client: { addr: os, port: Number(osp) }, serverSide, earlier: [], unanswered };
        latest.set(`${os}:${osp}`, c);
        out.push(c);
      }
      return out.map(({ unanswered: _, ...c }) => c);
    },
  };
}

type Row = TimelineRow & { fid: string };

export async function checkJoins(ch: ClickHouseClient, state: LabState, connections: readonly CtConnection[], opts: { lbAgent: boolean; sinceNs: bigint }): Promise<JoinReport> {
  // Each tuple (either way round) -> the connections that used it, oldest first: an event
  // belongs to the latest one started before it (a reused client port starts a new one).
  const byTuple = new Map<string, number[]>();
  connections.forEach((c, i) => {
    const keys = [key(c.client.addr, c.client.port, state.vip.ip, state.vip.port), key(state.vip.ip, state.vip.port, c.client.addr, c.client.port)];
    for (const { src, dst } of [c.serverSide, ...c.earlier]) keys.push(key(src.addr, src.port, dst.addr, dst.port), key(dst.addr, dst.port, src.addr, src.port));
    for (const k of new Set(keys)) {
      const l = byTuple.get(k) ?? [];
      l.push(i);
      byTuple.set(k, l);
    }
  });
  const ownerOf = (r: TimelineRow): number | undefined => {
    const l = byTuple.get(key(r.saddr, r.sport, r.daddr, r.dport));
    if (!l) return undefined;
    const t = BigInt(r.wall_ts_ns) + OWNER_SLACK_NS;
    let owner: number | undefined;
    for (const i of l) if (connections[i]!.tsNs <= t) owner = i;
    return owner;
  };
  const rows: Row[] = await queryEventRows(ch, `SELECT flow_id AS fid, ${EVENT_READ_COLUMNS} FROM hop_events FINAL WHERE kind = ${Kind.PACKET} AND wall_ts_ns >= ${uint(opts.sinceNs)} AND proto = 6`, true);
  // Which flow holds each connection's client-side events (the most of them).
  const clientVotes = new Map<number, Map<string, number>>();
  const byFlow = new Map<string, Row[]>();
  for (const r of rows) {
    let l = byFlow.get(r.fid);
    if (!l) byFlow.set(r.fid, (l = []));
    l.push(r);
    const owner = ownerOf(r);
    if (owner === undefined || r.node !== 'node-a') continue;
    const votes = clientVotes.get(owner) ?? new Map<string, number>();
    votes.set(r.fid, (votes.get(r.fid) ?? 0) + 1);
    clientVotes.set(owner, votes);
  }
  const flowOf = new Map<number, string>();
  const requestOf = new Map<string, number>();
  for (const [port, votes] of clientVotes) {
    const best = [...votes].sort((a, b) => b[1] - a[1])[0]![0];
    flowOf.set(port, best);
    requestOf.set(best, port);
  }
  let belonging = 0;
  let assigned = 0;
  let correct = 0;
  const mistakes: string[] = [];
  for (const r of rows) {
    const owner = ownerOf(r);
    const as = requestOf.get(r.fid);
    if (owner !== undefined) belonging++;
    if (as !== undefined) assigned++;
    if (owner !== undefined && as === owner) correct++;
    else if ((owner !== undefined || as !== undefined) && mistakes.length < 5) {
      mistakes.push(`event ${r.agent}/${r.seq} ${r.node} ${r.ifname} ${r.saddr}:${r.sport}->${r.daddr}:${r.dport} flags ${r.tcp_flags} isn ${r.isn_c}/${r.isn_s}: belongs to connection ${owner ?? '-'}, assigned to ${as ?? '-'} (flow ${r.fid})`);
    }
  }

  let pathMistakes = 0;
  let pathUnverified = 0;
  connections.forEach((c, i) => {
    const fid = flowOf.get(i);
    const hops = fid ? buildPath(byFlow.get(fid)!).paths.forward : [];
    const last = hops[hops.length - 1];
    if (last && !byTuple.has(key(last.src.addr, last.src.port, last.dst.addr, last.dst.port))) {
      pathUnverified++;
      if (mistakes.length < 10) mistakes.push(`connection from port ${c.client.port}: unverified, last hop ${ep(last.src)} -> ${ep(last.dst)} is no connection's in the truth`);
      return;
    }
    const problem = fid ? pathProblem(hops, c, state, opts.lbAgent) : 'no events found';
    if (problem) {
      pathMistakes++;
      if (mistakes.length < 10) mistakes.push(`connection from port ${c.client.port}: ${problem}`);
    }
  });
  return {
    requests: connections.length,
    found: flowOf.size,
    events: { belonging, assigned, correct },
    precision: assigned ? correct / assigned : 0,
    recall: belonging ? correct / belonging : 0,
    pathMistakes,
    pathUnverified,
    mistakes,
    latency: latencyReport([...flowOf.values()].map((fid) => byFlow.get(fid)!)),
  };
}

/**
 * Waits until no new events of the run arrive for `quietMs` (the agents have flushed)
 * and the correlator group has no lag. A quiet table alone is not enough: after a
 * correlator is killed, its partitions wait for its Kafka session to expire (30 s)
 * while the others have long gone quiet.
 */
export async function waitQuiet(ch: ClickHouseClient, sinceNs: bigint, lag: () => Promise<number>, quietMs = 3_000, timeoutMs = 120_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  let since = Date.now();
  for (;;) {
    const rs = await ch.query({ query: `SELECT count() AS n FROM hop_events WHERE wall_ts_ns >= ${uint(sinceNs)}`, format: 'JSONEachRow' });
    const n = Number((await rs.json<{ n: string }>())[0]?.n ?? 0);
    if (n !== last) {
      last = n;
      since = Date.now();
    } else if (n > 0 && Date.now() - since >= quietMs && (await lag()) === 0) return n;
    if (Date.now() > deadline) return n;
    await sleep(500);
  }
}

const ep = (e: { addr: string; port: number }) => `${e.addr}:${e.port}`;

/** Why a request's forward path is wrong, or null when it is right. */
function pathProblem(hops: PathHop[], t: CtConnection, state: LabState, lbAgent: boolean): string | null {
  if (!hops.length) return 'no forward path';
  const nodes = [...new Set(hops.map((h) => h.node))];
  const want = lbAgent ? ORDER : ORDER.filter((n) => n !== 'node-lb');
  if (nodes.join() !== want.join()) return `nodes ${nodes.join(' -> ')}, expected ${want.join(' -> ')}`;
  for (let i = 1; i < hops.length; i++) if (ORDER.indexOf(hops[i]!.node) < ORDER.indexOf(hops[i - 1]!.node)) return `hop ${i + 1} on ${hops[i]!.node} after ${hops[i - 1]!.node}`;
  const first = hops[0]!;
  if (ep(first.src) !== ep(t.client) || ep(first.dst) !== `${state.vip.ip}:${state.vip.port}`) return `first hop ${ep(first.src)} -> ${ep(first.dst)}`;
  const last = hops[hops.length - 1]!;
  if (ep(last.src) !== ep(t.serverSide.src) || ep(last.dst) !== ep(t.serverSide.dst)) return `last hop ${ep(last.src)} -> ${ep(last.dst)}, expected ${ep(t.serverSide.src)} -> ${ep(t.serverSide.dst)}`;
  const nats = hops.filter((h) => h.nat);
  const dnat = `DNAT ${state.vip.ip}:${state.vip.port} -> ${ep(t.serverSide.dst)}`;
  const expected = ep(t.serverSide.src) === ep(t.client) ? dnat : `${dnat}, SNAT ${ep(t.client)} -> ${ep(t.serverSide.src)}`;
  if (nats.length !== 1 || nats[0]!.nat !== expected) return `NAT ${nats.map((h) => `${h.nat} at ${h.node}`).join('; ') || 'none'}, expected ${expected}`;
  const at = nats[0]!.node;
  if (at !== (lbAgent ? 'node-lb' : 'node-c')) return `NAT seen at ${at}`;
  return null;
}

/** Requests through the VIP, recorded against node-lb's conntrack, then checked once hoptrace has caught up. */
export async function runCheck(cfg: Config, ch: ClickHouseClient, n: number, opts: { lbAgent: boolean; during?: () => void | Promise<void> }): Promise<{ requests: RequestResult; report: JoinReport }> {
  const state = requireState();
  const sinceNs = BigInt(Date.now() - 1000) * 1_000_000n;
  const recording = recordConnections(state);
  await recording.ready;
  const pending = runRequests(n);
  await opts.during?.();
  const requests = await pending;
  const connections = alignToRequests(await recording.stop(), requests);
  const kafka = createKafka(cfg, 'lab-check', createLogger('lab-check', cfg.logLevel));
  const lag = lagReader(cfg, kafka);
  await waitQuiet(ch, sinceNs, lag.read).finally(lag.close);
  return { requests, report: await checkJoins(ch, state, connections, { lbAgent: opts.lbAgent, sinceNs }) };
}

/**
 * Polling gives a connection's time only to the poll interval; the client's own start
 * time of each request (same machine, taken before connect) orders connections on a
 * reused port exactly. A client port reused while node-lb still held the tuple in
 * TIME_WAIT reopens the same conntrack entry (same id, same NAT), so one entry can
 * stand for several requests: each request gets its own connection, with the tuples of
 * the entry nearest in time and its own start time.
 */
function alignToRequests(connections: CtConnection[], requests: RequestResult): CtConnection[] {
  const byPort = new Map<number, CtConnection[]>();
  for (const c of connections) {
    const l = byPort.get(c.client.port) ?? [];
    l.push(c);
    byPort.set(c.client.port, l);
  }
  const reqByPort = new Map<number, bigint[]>();
  for (const f of requests.flows) {
    const l = reqByPort.get(f.sport) ?? [];
    l.push(BigInt(Math.round(f.startMs * 1e6)));
    reqByPort.set(f.sport, l);
  }
  const out: CtConnection[] = [];
  for (const [port, starts] of reqByPort) {
    const entries = byPort.get(port);
    if (!entries?.length) continue;
    starts.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    // As many entries as requests on the port: pair them in order (poll times are too coarse to
    // pick by nearness); fewer (a reopened entry): each request takes the nearest one.
    starts.forEach((start, k) => {
      const dist = (c: CtConnection) => (c.tsNs > start ? c.tsNs - start : start - c.tsNs);
      const entry = entries.length === starts.length ? entries[k]! : entries.reduce((best, c) => (dist(c) < dist(best) ? c : best));
      out.push({ ...entry, tsNs: start - 1_000_000n });
    });
  }
  return out.sort((a, b) => (a.tsNs < b.tsNs ? -1 : a.tsNs > b.tsNs ? 1 : 0));
}
