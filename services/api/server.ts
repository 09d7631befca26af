/**
 * Thin entry of the API service: wires ClickHouse, the logger and the app plugin,
 * listens, and closes cleanly on SIGINT/SIGTERM (in-flight requests finish; new ones
 * get 503 while closing).
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Config } from '../shared/config.js';
import { createClickHouse } from '../shared/clickhouse.js';
import { createLogger } from '../shared/log.js';
import { app } from './app.js';
import { createFlowStore } from './queries.js';

export interface RunningApi {
  fastify: FastifyInstance;
  /** `http://host:port` the API listens on. */
  address: string;
  /** Stops listening, waits for in-flight requests, closes ClickHouse. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts the API. ClickHouse need not be up: routes answer 503 naming it until it is.
 * With `handleSignals` (default), SIGINT/SIGTERM close the server and the process exits.
 */
export async function startApi(cfg: Config, opts: { handleSignals?: boolean } = {}): Promise<RunningApi> {
  const log = createLogger('api', cfg.logLevel);
  const ch = createClickHouse(cfg);
  const fastify = Fastify({ loggerInstance: log as FastifyBaseLogger, return503OnClosing: true, forceCloseConnections: 'idle' });
  await fastify.register(app, { store: createFlowStore(ch, cfg.clickhouseUrl), cfg });

  const handleSignals = opts.handleSignals ?? true;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      if (handleSignals) {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      try {
        await fastify.close();
      } finally {
        await ch.close();
      }
    })());
  function onSignal(signal: NodeJS.Signals): void {
    log.info({ signal }, 'closing the API');
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'error while closing the API');
        process.exit(1);
      },
    );
  }

  await fastify.listen({ host: cfg.apiHost, port: cfg.apiPort });
  const addr = fastify.server.address();
  const address = addr && typeof addr === 'object' ? `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}` : String(addr);
  log.info({ address, clickhouse: cfg.clickhouseUrl }, `hoptrace API listening on ${address}`);

  if (handleSignals) {
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }
  return { fastify, address, close };
}
