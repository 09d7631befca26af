/**
 * The query API as a fastify plugin. Storage comes in as a FlowStore (queries.ts) so
 * tests can drive the routes with `inject` and a fake; server.ts wires the real one.
 * Logging goes through fastify's logger (server.ts passes hoptrace's pino instance).
 *
 * Routes:
 *   GET /healthz                             ClickHouse reachable (200) or not (503)
 *   GET /api/v1/flows                        flow summaries, newest first
 *   GET /api/v1/flows/:flowId/timeline       one flow's summary and timeline
 *   GET /api/v1/flows/:flowId/path           one flow's hops per direction, NAT, per-segment latency
 *   GET /api/v1/reports/latency              per-segment latency over many flows, clocks corrected
 *   GET /api/v1/incidents                    stored verdicts (resets, drops, retransmission bursts), newest first
 *   GET /api/v1/flows/:flowId/explain        one flow's path and every verdict on it, in words
 *
 * Errors are `{statusCode, code, error, message}`; bad parameters get 400 with the
 * field named (`querystring/port must be <= 65535`), never a stack trace.
 */
import type { FastifyError, FastifyPluginAsync, FastifySchemaValidationError } from 'fastify';
import type { Config } from '../shared/config.js';
import { HopError, type ErrorCode } from '../shared/errors.js';
import { canonicalIp } from '../shared/sql.js';
import { explainText } from '../correlator/explain.js';
import { buildPath } from '../correlator/path.js';
import { judgeFlow } from '../correlator/verdicts.js';
import { latencyReport } from '../correlator/report.js';
import { buildTimeline } from '../correlator/timeline.js';
import { flowLinks, PROTOCOLS, type FlowFilter, type FlowStore, type IncidentFilter, type ReportFilter } from './queries.js';
import { joinHandshakeSides } from '../correlator/handshake.js';
import { explainResponses, flowsQuerySchema, flowsResponses, healthResponses, incidentsQuerySchema, incidentsResponses, latencyQuerySchema, latencyResponses, PATTERN_HINTS, pathResponses, timelineParamsSchema, timelineResponses } from './schemas.js';
import { parseTime, TIME_HINT } from './time.js';

export interface AppDeps {
  store: FlowStore;
  cfg: Pick<Config, 'apiMaxRows'>;
  /** Clock for relative times (`since=15m`), ms since the epoch. */
  now?: () => number;
  /** Longest wait for ClickHouse's answer in /healthz, ms. */
  healthTimeoutMs?: number;
}

interface IncidentsQuery {
  type?: string;
  namespace?: string;
  pod?: string;
  service?: string;
  node?: string;
  since?: string;
  until?: string;
  limit: number;
}

interface LatencyQuery {
  service?: string;
  port?: number;
  pod?: string;
  node?: string;
  since?: string;
  until?: string;
  maxFlows: number;
}

interface FlowsQuery {
  addr?: string;
  port?: number;
  node?: string;
  proto?: string;
  since?: string;
  until?: string;
  limit: number;
}

const STATUS: Partial<Record<ErrorCode, number>> = {
  HOP_BAD_REQUEST: 400,
  HOP_NOT_FOUND: 404,
  HOP_CLICKHOUSE_QUERY: 502,
  HOP_CLICKHOUSE_UNREACHABLE: 503,
};

const REASON: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
};

const UINT64_LIMIT = 1n << 64n;

interface PropertySchema {
  type?: string;
  minimum?: number;
  maximum?: number;
}

function bad(field: string, why: string): HopError {
  return new HopError('HOP_BAD_REQUEST', `${field} ${why}`);
}

/** One message per validation failure, naming the field: `querystring/port must be <= 65535`. */
export function formatSchemaErrors(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const e = errors[0];
  if (!e) return new Error(`${dataVar} is invalid`);
  const params = e.params as Record<string, unknown>;
  if (e.keyword === 'required') return new Error(`${dataVar}/${String(params.missingProperty)} is required`);
  if (e.keyword === 'additionalProperties') return new Error(`${dataVar}/${String(params.additionalProperty).slice(0, 64)} is not a known parameter`);
  const field = `${dataVar}${e.instancePath}`;
  if (e.keyword === 'pattern') return new Error(`${field} ${PATTERN_HINTS[field] ?? 'is malformed'}`);
  return new Error(`${field} ${e.message ?? 'is invalid'}`);
}

export const app: FastifyPluginAsync<AppDeps> = async (f, deps) => {
  const { store, cfg } = deps;
  const now = deps.now ?? Date.now;
  const healthTimeoutMs = deps.healthTimeoutMs ?? 2000;

  f.setSchemaErrorFormatter(formatSchemaErrors);

  function timeRange(q: { since?: string; until?: string }): { sinceNs?: bigint; untilNs?: bigint } {
    const t = now();
    const out: { sinceNs?: bigint; untilNs?: bigint } = {};
    for (const field of ['since', 'until'] as const) {
      if (q[field] === undefined) continue;
      const ns = parseTime(q[field], t);
      if (ns === null) throw bad(`querystring/${field}`, TIME_HINT);
      out[field === 'since' ? 'sinceNs' : 'untilNs'] = ns;
    }
    if (out.sinceNs !== undefined && out.untilNs !== undefined && out.untilNs < out.sinceNs) throw bad('querystring/until', 'must not be before querystring/since');
    return out;
  }

  /**
   * A flow's summary and its first apiMaxRows events, with those of the connection's other
   * flow when its SYN-ACK did not reach every node (handshake.ts: `joined`); 404 when it has
   * neither summary nor events.
   */
  async function loadFlow(raw: string) {
    const id = BigInt(raw);
    if (id >= UINT64_LIMIT) throw bad('params/flowId', 'must be below 2^64');
    const limit = cfg.apiMaxRows;
    // Side by side: the events statement finds the flow's span in its summary rows itself.
    const [flow, inSpan] = await Promise.all([store.getFlow(id), store.flowEvents(id, limit + 1, 'summary')]);
    // No summary (none written yet, or events that count in none): its span is unknown.
    const rows = flow ? inSpan : await store.flowEvents(id, limit + 1, 'all');
    if (!flow && rows.length === 0) throw new HopError('HOP_NOT_FOUND', `flow ${id} not found`);
    const { joined, events } = await joinHandshakeSides(store, id, rows, limit + 1);
    const truncated = events.length > limit;
    return { id, flow, events: truncated ? events.slice(0, limit) : events, truncated, joined };
  }

  // Before ajv: it strips unknown properties instead of rejecting them (a typo such as
  // `?prot=tcp` must not silently widen a query), and its number coercion is lenient
  // (`0x50` is 80, `1e400` is Infinity and passes `maximum`).
  f.addHook('preValidation', async (req) => {
    const schema = req.routeOptions.schema?.querystring as { properties?: Record<string, PropertySchema> } | undefined;
    if (!schema?.properties || !req.query || typeof req.query !== 'object') return;
    for (const [key, raw] of Object.entries(req.query as Record<string, unknown>)) {
      const field = `querystring/${key.slice(0, 64)}`;
      if (!Object.hasOwn(schema.properties, key)) throw bad(field, `is not a known parameter (known: ${Object.keys(schema.properties).join(', ')})`);
      const p = schema.properties[key]!;
      if (p.type !== 'integer' || typeof raw !== 'string') continue;
      if (!/^-?[0-9]+$/.test(raw)) throw bad(field, 'must be integer');
      if (!Number.isSafeInteger(Number(raw))) throw bad(field, raw.startsWith('-') ? `must be >= ${p.minimum}` : `must be <= ${p.maximum}`);
    }
  });

  f.setErrorHandler((err: FastifyError | HopError, req, reply) => {
    let status: number;
    let code: string;
    let message: string;
    if ('validation' in err && err.validation) {
      [status, code, message] = [400, 'HOP_BAD_REQUEST', err.message];
    } else if (err instanceof HopError) {
      status = STATUS[err.code] ?? 500;
      [code, message] = [err.code, status === 500 ? 'internal error' : err.message];
    } else if ('statusCode' in err && typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      // fastify's own client errors (malformed URL, body too large...).
      [status, code, message] = [err.statusCode, err.code ?? 'HOP_BAD_REQUEST', err.message];
    } else {
      [status, code, message] = [500, 'HOP_INTERNAL', 'internal error'];
    }
    if (status >= 500) req.log.error({ err, code }, message);
    else req.log.info({ code }, message);
    return reply.code(status).send({ statusCode: status, code, error: REASON[status] ?? 'Error', message });
  });

  f.get('/healthz', { schema: { response: healthResponses } }, async (_req, reply) => {
    const r = await store.ping(healthTimeoutMs);
    if (r.ok) return { status: 'ok', clickhouse: { reachable: true, url: store.where } };
    return reply.code(503).send({
      status: 'unavailable',
      clickhouse: { reachable: false, url: store.where, error: `ClickHouse at ${store.where} is unreachable: ${r.error}` },
    });
  });

  f.get<{ Querystring: FlowsQuery }>(
    '/api/v1/flows',
    { schema: { querystring: flowsQuerySchema(cfg.apiMaxRows), response: flowsResponses } },
    async (req) => {
      const q = req.query;
      const filter: FlowFilter = { limit: q.limit + 1 };
      if (q.addr !== undefined) {
        const ip = canonicalIp(q.addr);
        if (ip === null) throw bad('querystring/addr', PATTERN_HINTS['querystring/addr']!);
        filter.addr = ip;
      }
      if (q.port !== undefined) filter.port = q.port;
      if (q.node !== undefined) filter.node = q.node;
      if (q.proto !== undefined) {
        const p = PROTOCOLS[q.proto] ?? (/^\d+$/.test(q.proto) ? Number(q.proto) : NaN);
        if (!(p >= 0 && p <= 255)) throw bad('querystring/proto', 'must be <= 255');
        filter.proto = p;
      }
      Object.assign(filter, timeRange(q));
      const flows = await store.listFlows(filter);
      const truncated = flows.length > q.limit;
      if (truncated) flows.length = q.limit;
      return { flows, count: flows.length, limit: q.limit, truncated };
    },
  );

  f.get<{ Params: { flowId: string } }>(
    '/api/v1/flows/:flowId/timeline',
    { schema: { params: timelineParamsSchema, response: timelineResponses } },
    async (req) => {
      const { flow, events, truncated, joined } = await loadFlow(req.params.flowId);
      return { flow, timeline: buildTimeline(events), truncated, eventLimit: cfg.apiMaxRows, joined };
    },
  );

  f.get<{ Params: { flowId: string } }>(
    '/api/v1/flows/:flowId/path',
    { schema: { params: timelineParamsSchema, response: pathResponses } },
    async (req) => {
      const { flow, events, truncated, joined } = await loadFlow(req.params.flowId);
      return { flow, path: buildPath(events), truncated, joined };
    },
  );

  f.get<{ Params: { flowId: string } }>(
    '/api/v1/flows/:flowId/explain',
    { schema: { params: timelineParamsSchema, response: explainResponses } },
    async (req) => {
      const { id, flow, events, truncated, joined } = await loadFlow(req.params.flowId);
      const path = buildPath(events);
      const verdicts = judgeFlow(events);
      return { flow, path, verdicts, text: explainText(path, verdicts, joined), truncated, joined, links: flowLinks(id.toString()) };
    },
  );

  f.get<{ Querystring: IncidentsQuery }>(
    '/api/v1/incidents',
    { schema: { querystring: incidentsQuerySchema(cfg.apiMaxRows), response: incidentsResponses } },
    async (req) => {
      const q = req.query;
      const filter: IncidentFilter = { limit: q.limit + 1, ...timeRange(q) };
      if (q.type !== undefined) filter.kind = q.type;
      if (q.namespace !== undefined) filter.namespace = q.namespace;
      if (q.pod !== undefined) filter.pod = q.pod;
      if (q.node !== undefined) filter.node = q.node;
      if (q.service !== undefined) {
        const ip = canonicalIp(q.service);
        if (ip === null) throw bad('querystring/service', PATTERN_HINTS['querystring/service']!);
        filter.service = ip;
      }
      const incidents = await store.listIncidents(filter);
      const truncated = incidents.length > q.limit;
      if (truncated) incidents.length = q.limit;
      return { incidents, count: incidents.length, truncated };
    },
  );

  f.get<{ Querystring: LatencyQuery }>(
    '/api/v1/reports/latency',
    { schema: { querystring: latencyQuerySchema(cfg.apiMaxRows), response: latencyResponses } },
    async (req) => {
      const q = req.query;
      const filter: ReportFilter = { maxFlows: q.maxFlows, maxRows: cfg.apiMaxRows * 100, ...timeRange(q) };
      if (q.service !== undefined) {
        const ip = canonicalIp(q.service);
        if (ip === null) throw bad('querystring/service', PATTERN_HINTS['querystring/service']!);
        filter.service = ip;
      }
      if (q.port !== undefined) filter.port = q.port;
      if (q.pod !== undefined) filter.pod = q.pod;
      if (q.node !== undefined) filter.node = q.node;
      const { flows, truncated } = await store.reportEvents(filter);
      return { ...latencyReport(flows), truncated };
    },
  );
};

export default app;
