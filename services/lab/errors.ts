/**
 * Lab errors carry a stable `code` like HopError. They are a separate class because
 * the shared ErrorCode union has no lab codes yet; describeError() prints them as usual.
 */
export type LabErrorCode =
  /** An external command (ip, iptables, tc, conntrack, a workload) failed. */
  | 'HOP_LAB_COMMAND'
  /** Bad arguments: unknown node, link or malformed value. */
  | 'HOP_LAB_BAD_ARGUMENT'
  /** The lab is not up (no state file) or its state file is unreadable. */
  | 'HOP_LAB_NOT_UP'
  /** The lab came up but does not work (a workload not listening, the VIP not answering). */
  | 'HOP_LAB_UNHEALTHY';

export class LabError extends Error {
  readonly retriable = false;
  constructor(
    readonly code: LabErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'LabError';
  }
}
