/** Agent Prometheus metrics (prom-client). The live source adds its own to the same registry. */
import { createServer, type Server } from 'node:http';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

/**
 * Every garbage collection by kind. prom-client's nodejs_gc_duration_seconds observes only the
 * first entry of each batch the observer is handed, and at full capture it showed no major GC
 * while --trace-gc counted ~1.6 a second: each is a pause and marking threads taking CPU.
 */
function countGcs(registry: Registry): void {
  const gcs = new Counter({ name: 'hoptrace_agent_gcs_total', help: 'Garbage collections of the agent process, by kind (minor, major, incremental, weakcb).', labelNames: ['kind'], registers: [registry] });
  const seconds = new Counter({ name: 'hoptrace_agent_gc_seconds_total', help: 'Time in garbage collection pauses of the agent process, by kind.', labelNames: ['kind'], registers: [registry] });
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = GC_KINDS[(e.detail as { kind?: number } | undefined)?.kind ?? -1] ?? 'other';
      gcs.inc({ kind });
      seconds.inc({ kind }, e.duration / 1000);
    }
  }).observe({ entryTypes: ['gc'] });
}

export function createAgentMetrics(registry = new Registry()) {
  return {
    registry,
    recordsRead: new Counter({ name: 'hoptrace_agent_records_read_total', help: 'Records taken from the source.', registers: [registry] }),
    recordsSent: new Counter({ name: 'hoptrace_agent_records_sent_total', help: 'Records acknowledged by Kafka.', registers: [registry] }),
    batchesSent: new Counter({ name: 'hoptrace_agent_batches_sent_total', help: 'Kafka messages (record batches) acknowledged.', registers: [registry] }),
    recordsDropped: new Counter({ name: 'hoptrace_agent_records_dropped_total', help: 'Records the agent could not ship, by reason.', labelNames: ['reason'], registers: [registry] }),
    produceErrors: new Counter({ name: 'hoptrace_agent_kafka_produce_errors_total', help: 'Failed Kafka produce attempts, by error type.', labelNames: ['code'], registers: [registry] }),
    produceLatency: new Histogram({ name: 'hoptrace_agent_kafka_produce_seconds', help: 'Kafka produce request latency.', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [registry] }),
  };
}

export type AgentMetrics = ReturnType<typeof createAgentMetrics>;

/** Serves GET /metrics on host:port. */
export function serveMetrics(registry: Registry, host: string, port: number): Promise<Server> {
  // Event-loop delay sampled once a second, not every 10 ms (prom-client's default): the
  // sampler is a timer of its own, and each firing wakes the agent. At 100 ms it was
  // ~9 of a quiet agent's ~21 context switches a second (perf stat -e context-switches,
  // lab with every flow sampled out); a stall shorter than a second may now go unseen.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 1000 });
  countGcs(registry);
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end('try /metrics\n');
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      (err: Error) => res.writeHead(500).end(err.message),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
