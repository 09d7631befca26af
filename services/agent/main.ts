/** Agent entry: one source (a recording for now, or live capture), Kafka, /metrics, graceful stop. */
import type { Server } from 'node:http';
import type { Config } from '../shared/config.js';
import { createKafka, ensureTopic } from '../shared/kafka.js';
import { createLogger, type Logger } from '../shared/log.js';
import { createAgent, type Agent } from './agent.js';
import { createKafkaSink } from './kafka-sink.js';
import { createAgentMetrics, serveMetrics, type AgentMetrics } from './metrics.js';
import { createLiveHealth } from './live-health.js';
import { createLiveSource, describeLiveStatus, dropReasonName, kernelSymbol, loadKernelSymbols, parseLiveOptions, registerLiveMetrics, resetReasonName, type LiveOptionsInput, type LiveSource } from './live/index.js';
import { openRecording } from './recording-source.js';
import type { RecordChunk, RecordSource } from './source.js';

export interface RunningAgent {
  agent: Agent;
  source: RecordSource;
  done: Promise<void>;
  stop(): Promise<void>;
}

/** Starts an agent on `source`; resolves once it is producing. `done` settles when it has flushed. */
export async function startAgent(cfg: Config, source: RecordSource, log: Logger, opts: { metrics?: boolean; agentName?: string; agentMetrics?: AgentMetrics } = {}): Promise<RunningAgent> {
  const metrics = opts.agentMetrics ?? createAgentMetrics();
  let server: Server | undefined;
  if (opts.metrics !== false && cfg.metricsPort > 0) server = await serveMetrics(metrics.registry, '127.0.0.1', cfg.metricsPort);
  const abort = new AbortController();
  const kafka = createKafka(cfg, `agent-${source.node}`, log);
  const partitions = await ensureTopic(cfg, kafka, log, abort.signal);
  const sink = await createKafkaSink(cfg, kafka, log, abort.signal);
  const agent = createAgent({ cfg, source, sink, partitions, log, metrics, agent: opts.agentName });
  log.info({ node: source.node, partitions, kafka: cfg.kafkaBrokers }, 'agent producing');
  const done = agent.run().finally(async () => {
    await sink.close().catch(() => undefined);
    server?.close();
  });
  return {
    agent,
    source,
    done,
    async stop() {
      abort.abort();
      await agent.stop();
      await done;
    },
  };
}

/** `hoptrace agent --recording FILE [--retime]`: replay one node's recording, then exit. */
export async function runRecordingAgent(cfg: Config, file: string, rate: number, retime = false): Promise<void> {
  const log = createLogger('agent', cfg.logLevel);
  const source = await openRecording({ file, rate, retime, onCorrupt: (r) => log.warn(r, `corrupt record in ${r.file} at offset ${r.offset}: ${r.reason}`) });
  const running = await startAgent(cfg, source, log);
  const onSignal = () => void running.stop();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  await running.done;
  log.info({ ...running.agent.stats(), ...source.stats() }, 'agent finished');
}

/**
 * Shifts a source's clock reference by `skewMs`: stands for a node whose wall clock is
 * off by that much (the lab's unsynchronised-clock knob). The correlator estimates and
 * removes such offsets from traffic.
 */
export function withClockSkew(source: RecordSource, skewMs: number): RecordSource {
  if (skewMs === 0) return source;
  const skew = BigInt(Math.round(skewMs * 1e6));
  return {
    node: source.node,
    boot: source.boot,
    names: source.names,
    async *chunks(): AsyncGenerator<RecordChunk> {
      for await (const c of source.chunks()) yield { ...c, clockOffsetNs: c.clockOffsetNs + skew };
    },
    stop: () => source.stop(),
    stats: () => source.stats(),
    rejected: () => source.rejected(),
  };
}

/** A live source as the agent reads it: records, with the kernel's names for drop and reset reasons and code addresses. */
export function liveRecordSource(liveSource: LiveSource): RecordSource {
  return {
    node: liveSource.node,
    boot: liveSource.boot,
    names: { dropReason: dropReasonName, resetReason: resetReasonName, symbol: (a) => kernelSymbol(a) ?? undefined },
    chunks: () => liveSource.chunks(),
    stop: () => liveSource.stop(),
    stats: () => liveSource.stats(),
    rejected: () => liveSource.rejected(),
  };
}

/** How often the log is told of device links and start_xmit links failing (live-health.ts). */
const LIVE_HEALTH_MS = 5000;

/** `hoptrace agent --live`: capture from the running kernel until SIGINT/SIGTERM. */
export async function runLiveAgent(cfg: Config, live: LiveOptionsInput, skewMs: number): Promise<void> {
  const log = createLogger('agent', cfg.logLevel);
  const options = parseLiveOptions(live);
  loadKernelSymbols(); // before any record: not in the first drop's batch (ksyms.ts)
  const liveSource = createLiveSource(options);
  log.info(describeLiveStatus(liveSource.status()));
  const source = withClockSkew(liveRecordSource(liveSource), skewMs);
  const metrics = createAgentMetrics();
  registerLiveMetrics(metrics.registry, liveSource);
  let running: RunningAgent;
  try {
    running = await startAgent(cfg, source, log, { agentMetrics: metrics });
  } catch (err) {
    await liveSource.stop();
    throw err;
  }
  const health = setInterval(createLiveHealth(liveSource, log), LIVE_HEALTH_MS).unref();
  const onSignal = () => void running.stop();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  await running.done;
  clearInterval(health);
  log.info({ ...running.agent.stats(), ...liveSource.stats() }, 'agent finished');
}
