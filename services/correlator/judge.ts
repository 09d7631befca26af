/**
 * Turns flows with resets, drops or retransmissions into stored incidents.
 *
 * The correlator notifies the judge of flows whose written events include an
 * anomaly; the judge waits `settleMs` (the flow's other hops, from other nodes, are
 * usually still in flight), reads the flow's events back from ClickHouse, runs the
 * pure verdict rules (verdicts.ts) and writes one incident row per verdict. Judging
 * again later replaces the rows (ReplacingMergeTree on judged_at_ms). At start it
 * re-judges flows with anomalies in the last `lookbackMs` of event time, so a
 * crash between the write and the judgement loses nothing. Several correlators
 * judging the same flow write the same rows.
 *
 * A connection whose SYN-ACK did not reach the client's node is two flows (handshake.ts):
 * each is judged with the other's events and keeps the verdicts its own events trigger, so
 * the client side's SYN retransmissions say how far the SYN got, and the drop stays with
 * the side that recorded it. The server side, once judged, has the client side judged
 * again, in case that was judged before the server side was stored.
 */
import { createFlowStore } from '../api/queries.js';
import type { ClickHouseClient } from '../shared/clickhouse.js';
import { describeError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { uint } from '../shared/sql.js';
import { eventDate } from './rows.js';
import { EVENT_READ_COLUMNS, queryEventRows } from '../shared/stored-events.js';
import type { TimelineRow } from './timeline.js';
import { handshakeOf, joinHandshakeSides, mayHaveOtherSide, type FlowReads } from './handshake.js';
import { ANOMALY_SQL, eventId, judgeFlow, type Verdict } from './verdicts.js';

export interface IncidentRow {
  event_date: string;
  flow_id: string;
  incident_key: string;
  kind: string;
  ts_ns: string;
  node: string;
  netns: string;
  pod: string;
  place: string;
  sk_state: string;
  reason: number;
  reason_name: string;
  trigger: string;
  title: string;
  evidence: string;
  fix: string;
  judged_at_ms: number;
  /** 1: a verdict judging the flow again no longer gave (readers leave it out). */
  retracted: number;
}

export function incidentRow(flowId: string, v: Verdict, judgedAtMs: number): IncidentRow {
  return {
    event_date: eventDate(BigInt(v.tsNs)),
    flow_id: flowId,
    incident_key: v.key,
    kind: v.kind,
    ts_ns: v.tsNs,
    node: v.node,
    netns: v.netns,
    pod: v.pod,
    place: v.where,
    sk_state: v.skState,
    reason: v.reason,
    reason_name: v.reasonName,
    trigger: JSON.stringify(v.trigger),
    title: v.title,
    evidence: JSON.stringify(v.evidence),
    fix: v.fix ?? '',
    judged_at_ms: judgedAtMs,
    retracted: 0,
  };
}

/**
 * Retractions of the stored verdicts (`stored`, live rows) of flows judged again whose
 * new verdicts (`judged`) no longer include them: copies with retracted = 1, newer.
 * Only flows in `complete`, whose events were read in full.
 */
export function retractions(stored: IncidentRow[], judged: IncidentRow[], complete: ReadonlySet<string>, judgedAtMs: number): IncidentRow[] {
  const kept = new Set(judged.map((r) => `${r.flow_id}/${r.incident_key}`));
  return stored.filter((r) => complete.has(r.flow_id) && !kept.has(`${r.flow_id}/${r.incident_key}`)).map((r) => ({ ...r, retracted: 1, judged_at_ms: judgedAtMs }));
}

/** Flows of one judging round (up to 500) that may read the other flow of their connection (handshake.ts). */
const MAX_JOINS_PER_ROUND = 50;

export interface JudgeOptions {
  ch: ClickHouseClient;
  log: Logger;
  settleMs: number;
  lookbackMs: number;
  /** Most events read per judging round (flows past it wait for the next). */
  maxRows?: number;
  /** Where the other flow of a connection is read from (handshake.ts); ClickHouse through the API's queries by default. */
  reads?: FlowReads;
}

export interface Judge {
  /** Flows whose just-written events include anomalies. */
  notify(flowIds: Iterable<number>): void;
  /** Re-judges recent anomalies, then judges notified flows as they settle. */
  start(): Promise<void>;
  stop(): Promise<void>;
  stats(): { judged: number; incidents: number; retracted: number; truncated: number; unjoined: number; pending: number; errors: number };
}


export function createJudge(o: JudgeOptions): Judge {
  const due = new Map<number, number>();
  const backlog: number[] = [];
  const totals = { judged: 0, incidents: 0, retracted: 0, truncated: 0, unjoined: 0, errors: 0 };
  const maxRows = o.maxRows ?? 1_000_000;
  const reads = o.reads ?? createFlowStore(o.ch, 'ClickHouse');

  /**
   * The flow's verdicts, judged with the connection's other flow where its handshake left one.
   * `budget.joins`: how many more flows of this round may read another flow; past it a flow
   * is judged alone (counted), so a storm of unanswered SYNs cannot stall the judge.
   */
  async function verdictsOf(fid: string, events: TimelineRow[], budget: { joins: number }): Promise<Verdict[]> {
    const h = handshakeOf(events);
    if (!mayHaveOtherSide(h)) return judgeFlow(events);
    if (budget.joins <= 0) {
      totals.unjoined++;
      return judgeFlow(events);
    }
    budget.joins--;
    const { joined, events: all } = await joinHandshakeSides(reads, BigInt(fid), events, maxRows, h);
    if (!joined.length) return judgeFlow(events);
    if (h.isnS) for (const other of joined) if (!due.has(Number(other))) due.set(Number(other), 0);
    // Keys name their trigger event (verdicts.ts): each side keeps those of its own events.
    const own = new Set(events.map(eventId));
    return judgeFlow(all).filter((v) => own.has(v.key.slice(v.key.indexOf(':') + 1)));
  }
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();

  /** Judges the flows `ids`; returns those to judge again in a later round (not read in full). */
  async function judge(ids: number[]): Promise<number[]> {
    const list = ids.map(uint).join(', ');
    // PREWHERE: with FINAL, 18.16 leaves a WHERE where it is and reads every column of a granule per part and id first (~600 ms per flow at 100M events, bench/timeline-lookup.ts).
    const query = `SELECT flow_id AS fid, ${EVENT_READ_COLUMNS} FROM hop_events FINAL PREWHERE flow_id IN (${list}) ORDER BY fid, wall_ts_ns LIMIT ${uint(maxRows)}`;
    const events = await queryEventRows(o.ch, query, true);
    const byFlow = new Map<string, TimelineRow[]>();
    for (const r of events) {
      let l = byFlow.get(r.fid);
      if (!l) byFlow.set(r.fid, (l = []));
      l.push(r);
    }
    // At the row limit the last flow read may be cut short, and those after it (by flow_id) were
    // not read: they go back for a later round. A flow alone over the limit is judged on its
    // first maxRows events, and nothing of it retracted.
    const complete = new Set(byFlow.keys());
    let again: number[] = [];
    if (events.length >= maxRows) {
      const last = events.at(-1)!.fid;
      complete.delete(last);
      if (byFlow.size > 1) byFlow.delete(last);
      else {
        totals.truncated++;
        o.log.warn(`flow ${last} has over ${maxRows} events: judged on its first ${maxRows}`);
      }
      again = ids.filter((id) => id > Number(last) || (id === Number(last) && !byFlow.has(last)));
    }
    // WHERE, not PREWHERE: applied after FINAL, so a key whose newest row is a retraction stays out.
    const rs = await o.ch.query({ query: `SELECT * FROM incidents FINAL PREWHERE flow_id IN (${list}) WHERE retracted = 0`, format: 'JSONEachRow' });
    const stored = await rs.json<IncidentRow>();
    const now = Date.now();
    const rows: IncidentRow[] = [];
    const budget = { joins: MAX_JOINS_PER_ROUND };
    for (const [fid, events] of byFlow) for (const v of await verdictsOf(fid, events, budget)) rows.push(incidentRow(fid, v, now));
    const gone = retractions(stored, rows, complete, now);
    if (rows.length || gone.length) await o.ch.insert({ table: 'incidents', values: [...rows, ...gone], format: 'JSONEachRow' });
    totals.judged += byFlow.size;
    totals.incidents += rows.length;
    totals.retracted += gone.length;
    if (rows.length || gone.length) o.log.info({ flows: byFlow.size, incidents: rows.length, retracted: gone.length, kinds: [...new Set(rows.map((r) => r.kind))] }, 'incidents judged');
    return again;
  }

  async function round() {
    const now = Date.now();
    // Flows notified live first; the start-up backlog when nothing live is due.
    let ready = [...due].filter(([, t]) => t <= now).map(([id]) => id);
    if (!ready.length) ready = backlog.splice(0, 500).filter((id) => !due.has(id));
    if (!ready.length) return;
    for (const id of ready) due.delete(id);
    for (let i = 0; i < ready.length; i += 500) {
      const ids = ready.slice(i, i + 500);
      try {
        for (const id of await judge(ids)) if (!due.has(id)) due.set(id, 0);
      } catch (err) {
        // Put them back: ClickHouse may be away; they are judged when it returns.
        totals.errors++;
        for (const id of ids) if (!due.has(id)) due.set(id, Date.now() + o.settleMs);
        o.log.warn(`judging ${ids.length} flows failed, will retry: ${describeError(err)}`);
        return;
      }
    }
  }

  return {
    notify(flowIds) {
      const at = Date.now() + o.settleMs;
      for (const id of flowIds) if (!due.has(id)) due.set(id, at);
    },
    async start() {
      const sinceNs = BigInt(Date.now() - o.lookbackMs) * 1_000_000n;
      try {
        // Only the parts written since the lookback are read: each part's wall_ts_ns range is known (HOP_EVENTS_PARTITION).
        const rs = await o.ch.query({ query: `SELECT DISTINCT flow_id FROM hop_events WHERE wall_ts_ns >= ${uint(sinceNs)} AND ${ANOMALY_SQL}`, format: 'JSONEachRow' });
        const ids = (await rs.json<{ flow_id: string | number }>()).map((r) => Number(r.flow_id));
        if (ids.length) o.log.info({ flows: ids.length }, 're-judging recent anomalies');
        backlog.push(...ids);
      } catch (err) {
        o.log.warn(`could not list recent anomalies to re-judge: ${describeError(err)}`);
      }
      timer = setInterval(() => {
        running = running.then(round);
      }, Math.max(100, Math.min(1000, o.settleMs / 2)));
    },
    async stop() {
      if (timer) clearInterval(timer);
      await running;
    },
    stats: () => ({ ...totals, pending: due.size + backlog.length }),
  };
}
