/** Agent entry: one source (a recording for now, or live capture), Kafka, /metrics, graceful stop. */
import type { Server } from 'node:http';
import type { Config } from '../shared/config.js';
import { createKafka, ensureTopic } from '../shared/kafka.js';
import { createLogger, type Logger } from '../shared/log.js';
import { createAgent, type Agent } from './agent.js';
import { createKafkaSink } from './kafka-sink.js';
import { createAgentMetrics, serveMetrics } from './metrics.js';
import { openRecording } from './recording-source.js';
import type { RecordSource } from './source.js';

export interface RunningAgent {
  agent: Agent;
  source: RecordSource;
  done: Promise<void>;
  stop(): Promise<void>;
}

/** Starts an agent on `source`; resolves once it is producing. `done` settles when it has flushed. */
export async function startAgent(cfg: Config, source: RecordSource, log: Logger, opts: { metrics?: boolean; agentName?: string } = {}): Promise<RunningAgent> {
  const metrics = createAgentMetrics();
  let server: Server | undefined;
  if (opts.metrics !== false && cfg.metricsPort > 0) server = await serveMetrics(metrics.registry, '127.0.0.1', cfg.metricsPort);
  const abort = new AbortController();
  const kafka = createKafka(cfg, `agent-${source.node}`, log);
  const partitions = await ensureTopic(cfg, kafka, log, abort.signal);
  const sink = await createKafkaSink(cfg, kafka, log, abort.signal);
  const agent = createAgent({ cfg, source, sink, partitions, log, metrics, agent: opts.agentName });
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

/** `hoptrace agent --recording FILE`: replay one node's recording, then exit. */
export async function runRecordingAgent(cfg: Config, file: string, rate: number): Promise<void> {
  const log = createLogger('agent', cfg.logLevel);
  const source = await openRecording({ file, rate, onCorrupt: (r) => log.warn(r, `corrupt record in ${r.file} at offset ${r.offset}: ${r.reason}`) });
  const running = await startAgent(cfg, source, log);
  const onSignal = () => void running.stop();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  await running.done;
  log.info({ ...running.agent.stats(), ...source.stats() }, 'agent finished');
}
