/**
 * Typed errors with a stable `code`, a `retriable` flag and a `cause`
 * (kafkajs and fastify style). Hot paths count failures by code instead of logging each.
 */
export type ErrorCode =
  | 'HOP_CONFIG_INVALID'
  | 'HOP_KAFKA_UNREACHABLE'
  | 'HOP_KAFKA_PRODUCE'
  | 'HOP_CLICKHOUSE_UNREACHABLE'
  | 'HOP_CLICKHOUSE_QUERY'
  | 'HOP_RECORDING_INVALID'
  | 'HOP_BATCH_INVALID'
  | 'HOP_BAD_REQUEST'
  | 'HOP_NOT_FOUND';

export class HopError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly retriable = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'HopError';
  }
}

/** The message of an error and of its causes, for one log line. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e && depth < 4; depth++) {
    parts.push(e instanceof Error ? e.message : String(e));
    e = e instanceof Error ? e.cause : undefined;
  }
  return parts.join(': ');
}
