/** Structured logs (pino, as fastify uses): one JSON line per event on stderr. */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(service: string, level = 'info'): Logger {
  return pino({ name: service, level, base: { service } }, pino.destination(2));
}
